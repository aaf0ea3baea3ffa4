"""guard_requests rows, written off the response path by one small writer thread per process."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from flask import Flask
from sqlalchemy import insert, select

from gateway.extensions import db
from gateway.models import GuardRequest, User

log = logging.getLogger(__name__)
# guard_requests.clerk_user_id, .service and .request_id are String(64).
TEXT_COLUMN_LENGTH = 64


@dataclass(frozen=True)
class GuardRequestRecord:
    clerk_user_id: str | None
    service: str
    status_code: int | None
    outcome: str
    latency_ms: float
    request_id: str | None


class GuardAuditWriter:
    """Batches guard_requests inserts on a background thread with its own app context.

    Why not insert in the request: an INSERT + COMMIT costs a round trip and an fsync, several times
    the cost of the guard call itself on a fast upstream (bench/README.md). The trade-off, stated:
    rows still queued when the process is killed with SIGKILL are lost (a graceful stop flushes
    them), and past `max_queue` waiting rows new ones are dropped and counted in `dropped` rather
    than letting a slow database hold up guard calls or grow memory without bound. A failed batch
    is retried once, then dropped (and logged with its count).
    """

    def __init__(
        self,
        app: Flask,
        *,
        max_queue: int = 10_000,
        batch_size: int = 200,
        idle_seconds: float = 5.0,
        linger_seconds: float = 0.2,
    ) -> None:
        self._app = app
        self._queue: queue.Queue[GuardRequestRecord] = queue.Queue(maxsize=max_queue)
        self._batch_size = batch_size
        self._idle_seconds = idle_seconds
        self._linger_seconds = linger_seconds
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.written = 0

    def submit(self, record: GuardRequestRecord) -> None:
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            with self._lock:
                self.dropped += 1
            log.warning("guard audit queue full; a guard_requests row was dropped")
            return
        self._ensure_thread()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every submitted row is written (or dropped). False if the time ran out."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                # A daemon, so a hung database never holds up process exit; the thread ends
                # itself when idle, and an atexit flush (runtime.py) drains it on a graceful stop.
                self._thread = threading.Thread(
                    target=self._run, name="guard-audit-writer", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self._idle_seconds)
            except queue.Empty:
                with self._lock:
                    # submit() puts before it checks the thread, so an empty queue seen under the
                    # lock means any later row will start a new thread.
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            if self._queue.qsize() < self._batch_size - 1:
                # Let a batch gather. A sleep, not a wait on the queue: rows submitted meanwhile
                # do not wake this thread (each wake-up is a GIL hand-off from a request thread).
                time.sleep(self._linger_seconds)
            batch = [first]
            while len(batch) < self._batch_size:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._write_with_retry(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    def _write_with_retry(self, batch: list[GuardRequestRecord]) -> None:
        """The batch, retried once; if it still fails, row by row, so that one row the database
        refuses costs that row alone, never other callers' rows of the same batch."""
        for attempt in (1, 2):
            if self._write(batch, attempt):
                self.written += len(batch)
                return
        if len(batch) == 1:
            with self._lock:
                self.dropped += 1
            return
        for record in batch:
            if self._write([record], attempt=3):
                self.written += 1
            else:
                with self._lock:
                    self.dropped += 1

    def _write(self, records: list[GuardRequestRecord], attempt: int) -> bool:
        try:
            with self._app.app_context():
                try:
                    write_guard_requests(db.session, records)
                    db.session.commit()
                finally:
                    db.session.remove()
            return True
        except Exception as exc:  # noqa: BLE001 - the writer thread must survive any fault
            log.warning(
                "guard audit write failed (attempt %d, %d rows): %s",
                attempt,
                len(records),
                type(exc).__name__,
            )
            return False


def write_guard_requests(session: Any, records: list[GuardRequestRecord]) -> None:
    """Insert the rows, linking each to the local user when one exists (one lookup per batch)."""
    rows = [_storable_row(record) for record in records]
    clerk_ids = {row["clerk_user_id"] for row in rows if row["clerk_user_id"]}
    user_ids: dict[str, int] = {}
    if clerk_ids:
        found = session.execute(
            select(User.clerk_user_id, User.id).where(User.clerk_user_id.in_(clerk_ids))
        )
        user_ids = {clerk_id: user_id for clerk_id, user_id in found}
    session.execute(
        insert(GuardRequest),
        [row | {"user_id": user_ids.get(row["clerk_user_id"] or "")} for row in rows],
    )


def _storable_row(record: GuardRequestRecord) -> dict[str, Any]:
    return asdict(record) | {
        name: storable_text(getattr(record, name), TEXT_COLUMN_LENGTH)
        for name in ("clerk_user_id", "service", "request_id")
    }


def storable_text(text: str | None, limit: int) -> str | None:
    """Any string a client sent, in a form PostgreSQL stores: the service name of an unknown
    guard is the client's and may be anything. Text cannot hold NUL, and a lone surrogate
    (valid in a JSON string, "\\ud800") cannot be encoded: both become U+FFFD; the column is
    String(limit)."""
    if text is None:
        return None
    text = text[:limit]
    if text.isascii():
        return text.replace("\x00", "\ufffd")
    text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text[:limit].replace("\x00", "\ufffd")
