"""A real HTTP guard upstream on loopback that records every request it receives."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# GUARD_TIMEOUT_SECONDS for the guard tests: generous, so that a healthy upstream answers well
# within it on a busy machine; only /slow, which never answers in time, waits it out.
GUARD_TIMEOUT = "3"


@dataclass(frozen=True)
class Hit:
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real guard service would offer
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        hit = Hit(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        upstream = self.server.upstream
        upstream.record(hit)
        upstream.respond(self, hit)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512
    upstream: Upstream

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The gateway hanging up on /slow (its timeout) is expected here, not worth a traceback.
        pass


class Upstream:
    """Paths choose the behaviour, so one server plays several guard services:

    /echo          200 {"headers": ..., "payload": ...}
    /status/<n>    <n> {"status": n}
    /text          200 text/plain (not JSON)
    /slow          holds the answer until `release_slow` is set (at stop), then 200: longer than any
                   guard timeout, without a sleep that a busy machine could stretch or shorten
    /flaky         500 while `failing`, else 200; waits on `gate` when it is set up
    /allow, /deny  200 {"allowed": true|false, "reason": ...}
    /odd           200 {"allowed": "maybe"}
    /big           200, a JSON string over 4 MiB
    /strict        a strict JSON parser: 500 for what is not JSON (NaN, Infinity) or for a payload
                   {"poison": true} (an input one caller controls that crashes the guard), else
                   200 {"ok": true, "allowed": true} (a BiasGuard that lets logins through)
    """

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.upstream = self
        self.port = self._server.server_address[1]
        self._lock = threading.Lock()
        self.hits: list[Hit] = []
        self.failing = False
        self.release_slow = threading.Event()
        self.gate: threading.Event | None = None
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> Upstream:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release_slow.set()
        self._server.shutdown()
        self._server.server_close()

    def record(self, hit: Hit) -> None:
        with self._lock:
            self.hits.append(hit)

    def count(self, path: str) -> int:
        with self._lock:
            return sum(1 for hit in self.hits if hit.path == path)

    def respond(self, handler: _Handler, hit: Hit) -> None:
        path = hit.path
        if path == "/echo":
            self._send(handler, 200, {"headers": hit.headers, "payload": hit.json()})
        elif path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
            self._send(handler, status, {"status": status})
        elif path == "/text":
            self._send_raw(handler, 200, b"<html>not json</html>", "text/html")
        elif path == "/slow":
            self.release_slow.wait(60)
            self._send(handler, 200, {"slow": True})
        elif path == "/flaky":
            if self.gate is not None:
                self.gate.wait(10)
            self._send(handler, 500 if self.failing else 200, {"failing": self.failing})
        elif path == "/allow":
            self._send(handler, 200, {"allowed": True, "reason": "fine"})
        elif path == "/deny":
            self._send(handler, 200, {"allowed": False, "reason": "policy"})
        elif path == "/big":
            self._send_raw(handler, 200, b'"' + b"x" * (4 * 1024 * 1024 + 10) + b'"', "text/plain")
        elif path == "/strict":
            self._strict(handler, hit)
        elif path == "/odd":
            self._send(handler, 200, {"allowed": "maybe"})
        else:
            self._send(handler, 404, {"error": "no such path"})

    def _strict(self, handler: _Handler, hit: Hit) -> None:
        def not_json(name: str) -> Any:
            raise ValueError(name)

        try:
            payload = json.loads(hit.body, parse_constant=not_json)
        except ValueError:
            self._send(handler, 500, {"error": "not JSON"})
            return
        if isinstance(payload, dict) and payload.get("poison"):
            self._send(handler, 500, {"error": "crashed on this input"})
            return
        self._send(handler, 200, {"ok": True, "allowed": True})

    def _send(self, handler: _Handler, status: int, body: Any) -> None:
        self._send_raw(handler, status, json.dumps(body).encode(), "application/json")

    @staticmethod
    def _send_raw(handler: _Handler, status: int, body: bytes, content_type: str) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
