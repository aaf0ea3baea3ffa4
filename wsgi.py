"""WSGI entry point: gunicorn wsgi:app."""

import sys

from gateway import create_app
from gateway.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    # One clear line naming the variable, not a traceback (CONTRACT 2). Exit status 3 is
    # gunicorn's "worker failed to boot": the master stops instead of respawning forever.
    print(exc, file=sys.stderr)
    sys.exit(3)
