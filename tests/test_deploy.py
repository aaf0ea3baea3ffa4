"""What a Heroku deploy reads before any code runs (CONTRACT 5): app.json, .python-version and the
pinned dependency tree."""

from __future__ import annotations

import json
import re
import sys
from importlib import metadata

from tests.support.processes import ROOT
from tests.test_procfile import procfile

# Variables read outside config.py: by gunicorn.conf.py and the Procfile.
PROCESS_VARIABLES = {"PORT", "WEB_CONCURRENCY", "GUNICORN_THREADS", "WORKER_CONCURRENCY"}
NOT_PINNED = {"pip", "setuptools", "wheel"}


def app_json() -> dict:
    return json.loads((ROOT / "app.json").read_text())


def config_variables() -> set[str]:
    source = (ROOT / "gateway" / "config.py").read_text()
    return set(re.findall(r'reader\.\w+\(\s*"([A-Z][A-Z0-9_]+)"', source))


def test_app_json_describes_every_variable_the_processes_read():
    env = app_json()["env"]
    variables = config_variables() | PROCESS_VARIABLES
    assert {"DATABASE_URL", "REDIS_URL", "DATABASE_POOL_SIZE", "DATABASE_MAX_OVERFLOW"} <= variables
    missing = sorted(variables - set(env))
    assert not missing, f"app.json env lacks {missing}"
    for name, entry in env.items():
        assert entry.get("description", "").strip(), name
    # Heroku Redis certificates are self-signed (CONTRACT 2); admin keys are generated secrets.
    assert env["REDIS_SSL_CERT_REQS"]["value"] == "none"
    assert env["GATEWAY_ENV"]["value"] == "production"
    assert env["ADMIN_API_KEYS"]["generator"] == "secret"


def test_app_json_addons_and_formation_match_the_procfile():
    document = app_json()
    plans = [addon["plan"].split(":")[0] for addon in document["addons"]]
    assert plans == ["heroku-postgresql", "heroku-redis"]
    long_running = set(procfile()) - {"release"}
    assert set(document["formation"]) == long_running
    assert all(entry["quantity"] >= 1 for entry in document["formation"].values())


def test_python_version_is_the_one_the_suite_runs_on():
    pinned = (ROOT / ".python-version").read_text().strip()
    assert pinned == f"{sys.version_info.major}.{sys.version_info.minor}"


def constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not name==version"
            pins[_normal(name)] = version
    return pins


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_constraints_pin_every_installed_distribution():
    """make install and Heroku (requirements.txt's -c line) install exactly this tree: a new
    dependency without a regenerated constraints.txt fails here, not in next month's build."""
    pins = constraints()
    assert "-c constraints.txt" in (ROOT / "requirements.txt").read_text().splitlines()
    installed = {
        _normal(dist.metadata["Name"]): dist.version
        for dist in metadata.distributions()
        if _normal(dist.metadata["Name"]) not in NOT_PINNED
    }
    installed.pop("clerk-gateway", None)
    unpinned = sorted(name for name in installed if name not in pins)
    assert not unpinned, f"installed but not in constraints.txt: {unpinned}"
    drifted = sorted(f"{n} {v} != {pins[n]}" for n, v in installed.items() if pins[n] != v)
    assert not drifted, drifted
