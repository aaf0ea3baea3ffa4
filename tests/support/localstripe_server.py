"""Run localstripe on 127.0.0.1 only, with an in-memory store: python -m ... PORT.

`localstripe --port N` binds every interface and pickles its store to one fixed file in /tmp that
every run on the machine shares; tests need neither.
"""

from __future__ import annotations

import sys


def main() -> None:
    from aiohttp import web
    from localstripe import resources, server

    resources.Store.dump_to_disk = lambda self: None  # type: ignore[method-assign]
    resources.Store.try_load_from_disk = lambda self: None  # type: ignore[method-assign]
    web.run_app(server.app, host="127.0.0.1", port=int(sys.argv[1]), print=None)


if __name__ == "__main__":
    main()
