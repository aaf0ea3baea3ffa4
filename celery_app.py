"""Celery entry point: celery -A celery_app worker|beat."""

import sys

from gateway import create_app
from gateway.config import ConfigError

try:
    flask_app = create_app()
except ConfigError as exc:
    sys.exit(str(exc))

celery = flask_app.extensions["celery"]
# The worker's process-wide default app (what @shared_task binds to), set by its entry point only:
# create_app sets nothing global, so a process that builds several apps (tests) keeps them apart.
celery.set_default()
