"""Celery entry point: celery -A celery_app worker|beat."""

import sys

from gateway import create_app
from gateway.config import ConfigError

try:
    flask_app = create_app()
except ConfigError as exc:
    sys.exit(str(exc))

celery = flask_app.extensions["celery"]
