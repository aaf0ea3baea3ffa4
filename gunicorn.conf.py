"""Gunicorn settings for the web process (Procfile `web`).

Worker class: gthread. A gateway spends its time waiting on the network (JWKS, the Clerk API,
guard upstreams, PostgreSQL), so threads overlap that waiting while each process keeps one JWKS
cache, one connection pool and one circuit-breaker state shared by its threads. Unlike gevent it
needs no monkey-patching of psycopg, redis or urllib3, and a slow request cannot starve a whole
process's event loop.
"""

import os
import shutil
import sys
from pathlib import Path

# Heroku's router reaches the dyno on $PORT of every interface; `make run` (development) serves
# this machine only.
_host = "127.0.0.1" if os.environ.get("GATEWAY_ENV") == "development" else "0.0.0.0"  # noqa: S104
bind = f"{_host}:{os.environ.get('PORT', '8000')}"
worker_class = "gthread"
# Clerk session tokens can be large; the app, not gunicorn, must answer an oversized token with a
# 401 problem. Header fields of up to 32 KiB reach the app.
limit_request_field_size = 32768
limit_request_fields = 100
limit_request_line = 8190
timeout = 30
graceful_timeout = 20
keepalive = 5
# The app logs every request itself (JSON, paths redacted); gunicorn's access log would not redact.
accesslog = None
errorlog = "-"
# Heroku's router terminates TLS and sets X-Forwarded-*.
forwarded_allow_ips = "*"

# /metrics is one view of every worker process (prometheus-client's multiprocess mode): each
# process writes its samples to files in this folder, and a scrape sums them. It must be in the
# environment before any worker imports prometheus_client, hence here, when the master reads
# this file. Under the instance folder (gitignored), like every runtime file; one folder per
# master, so two servers sharing an instance folder (a benchmark's gateway and its baseline)
# neither sum nor wipe each other's samples.
_instance = os.environ.get("GATEWAY_INSTANCE_PATH") or str(Path(__file__).parent / "instance")
metrics_root = Path(_instance) / "metrics"
metrics_dir = os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR", str(metrics_root / f"gunicorn-{os.getpid()}")
)


def on_starting(server):
    """Validate configuration in the master, before any worker forks: one line, then exit."""
    from gateway.config import Config, ConfigError

    try:
        Config.from_env()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
    # Samples of a previous run would be summed into this one's forever; folders of masters that
    # are gone (killed before on_exit) are removed too.
    for folder in metrics_root.glob("gunicorn-*"):
        if not _alive(folder.name.removeprefix("gunicorn-")):
            shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(metrics_dir, ignore_errors=True)
    Path(metrics_dir).mkdir(parents=True, exist_ok=True)


def on_exit(server):
    shutil.rmtree(metrics_dir, ignore_errors=True)


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True  # another user's process
    return True


def child_exit(server, worker):
    """A worker is gone (restart, crash, max_requests): its counters stay in the sum, its live
    gauges are dropped."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, metrics_dir)


def _web_shape() -> tuple[int, int]:
    """(processes, threads): WEB_CONCURRENCY and GUNICORN_THREADS, read as Config reads them."""
    from gateway.config import ConfigError, web_process_shape

    try:
        return web_process_shape()
    except ConfigError:
        return 1, 1  # on_starting names the variable and stops before any worker starts


# Last: importing the gateway imports prometheus_client, which must see PROMETHEUS_MULTIPROC_DIR.
workers, threads = _web_shape()
