"""A localstripe process for this package's tests, emptied before each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.stripe import flush, run_localstripe


@pytest.fixture(scope="session")
def localstripe_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with run_localstripe(tmp_path_factory.mktemp("localstripe")) as url:
        yield url


@pytest.fixture
def localstripe(localstripe_server: str) -> str:
    flush(localstripe_server)
    return localstripe_server
