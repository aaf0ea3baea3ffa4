"""Unbound extension singletons; create_app binds them."""

from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from gateway.models.base import Base

db = SQLAlchemy(model_class=Base)
migrate = Migrate()
