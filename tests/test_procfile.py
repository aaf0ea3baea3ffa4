"""The Procfile's processes and the web process's gunicorn settings (CONTRACT 5)."""

import json
import subprocess
import sys

from tests.support.processes import ROOT


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip())


def test_procfile_has_release_web_worker_beat():
    processes = procfile()
    assert set(processes) == {"release", "web", "worker", "beat"}
    assert processes["release"] == "flask --app wsgi db upgrade"
    assert "gunicorn --config gunicorn.conf.py wsgi:app" in processes["web"]
    assert "celery -A celery_app worker" in processes["worker"]
    assert "REMAP_SIGTERM=SIGQUIT" in processes["worker"]
    assert "celery -A celery_app beat" in processes["beat"]


def gunicorn_settings(env: dict[str, str]) -> dict[str, object]:
    """Evaluate gunicorn.conf.py in a fresh interpreter with exactly `env`, as the web dyno does."""
    code = (
        "import json, runpy; ns = runpy.run_path('gunicorn.conf.py'); "
        "print(json.dumps({k: ns[k] for k in ('bind', 'workers', 'threads', 'worker_class', "
        "'limit_request_field_size', 'accesslog')}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout)


def test_gunicorn_conf_honours_port_and_web_concurrency():
    settings = gunicorn_settings({"PORT": "5123", "WEB_CONCURRENCY": "3", "GUNICORN_THREADS": "6"})
    assert settings["bind"] == "0.0.0.0:5123"
    assert settings["workers"] == 3
    assert settings["threads"] == 6
    assert settings["worker_class"] == "gthread"
    # A 20 KB token must reach the app (our 401), not gunicorn's own 400 page.
    assert settings["limit_request_field_size"] >= 32768
    # The app writes the access log itself, with paths redacted.
    assert settings["accesslog"] is None


def test_gunicorn_conf_defaults_to_port_8000():
    assert gunicorn_settings({})["bind"] == "0.0.0.0:8000"


def test_gunicorn_conf_development_binds_loopback_only():
    """`make run` serves this machine only; the URL it prints is the one it listens on."""
    settings = gunicorn_settings({"GATEWAY_ENV": "development", "PORT": "8123"})
    assert settings["bind"] == "127.0.0.1:8123"


def test_procfile_keeps_runtime_files_out_of_the_repository():
    """Beat's schedule comes from the app (instance/ by default), never a fixed /tmp file."""
    processes = procfile()
    assert "/tmp" not in "".join(processes.values())
    assert not (ROOT / "control").exists()
