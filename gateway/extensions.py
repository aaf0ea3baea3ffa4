"""Unbound extension singletons; create_app binds them."""

from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import exc as sa_exc

from gateway.models.base import Base

db = SQLAlchemy(model_class=Base)
migrate = Migrate()

# The database did not answer (down, unreachable, pool exhausted; deadlocks and serialization
# failures are OperationalErrors too): worth a retry, or a 503 that makes the caller retry.
DATABASE_DOWN_ERRORS: tuple[type[Exception], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
)
