"""Fault injectors on loopback: a TCP proxy that can be cut, and an HTTP proxy that can answer
errors instead of its upstream (Stripe 500/429)."""

from __future__ import annotations

import contextlib
import itertools
import select
import socket
import threading
import time
from collections.abc import Iterator

import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response


class TcpProxy:
    """127.0.0.1:<port> -> upstream. `cut()` drops every connection and refuses new ones (as a
    network partition or a stopped server looks to a client); `restore()` listens again on the
    same port. Used in front of the shared PostgreSQL, which the tests never stop."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = _free_port()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._closed = False
        self.restore()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._closed = True
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    server.close()
                    return
                self._sockets |= {client, server}
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while True:
                readable, _, _ = select.select(list(peers), [], [], 1.0)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()
            with self._lock:
                self._sockets -= {a, b}


class FaultyHttpProxy:
    """Forwards to `upstream`, except while failing: then it answers the statuses of `failures`
    in turn (e.g. 500, 429) without calling the upstream. Counts what it answered."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self._failing_until = 0.0
        self._statuses: Iterator[int] = iter(())
        self._lock = threading.Lock()
        self.answered: dict[int, int] = {}
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self._session = requests.Session()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def fail_for(self, seconds: float, statuses: tuple[int, ...] = (500, 429)) -> None:
        with self._lock:
            self._statuses = itertools.cycle(statuses)
            self._failing_until = time.monotonic() + seconds

    def close(self) -> None:
        self._server.shutdown()

    def _app(self, environ, start_response):  # type: ignore[no-untyped-def]
        request = Request(environ)
        with self._lock:
            failing = time.monotonic() < self._failing_until
            status = next(self._statuses) if failing else 0
        if failing:
            response = Response(
                '{"error": {"type": "api_error", "message": "injected fault"}}',
                status=status,
                content_type="application/json",
                headers={"Retry-After": "1"} if status == 429 else {},
            )
        else:
            upstream = self._session.request(
                request.method,
                f"{self.upstream}{request.full_path.rstrip('?')}",
                data=request.get_data(),
                headers={k: v for k, v in request.headers if k.lower() != "host"},
                timeout=30,
            )
            status = upstream.status_code
            response = Response(
                upstream.content,
                status=status,
                content_type=upstream.headers.get("Content-Type"),
            )
        with self._lock:
            self.answered[status] = self.answered.get(status, 0) + 1
        return response(environ, start_response)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
