"""SessionVerifier: one per process (gateway.auth.hook), verified tokens cached until their exp."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from gateway.auth.tokens import (
    MAX_TOKEN_LENGTH,
    Claims,
    KeySource,
    VerifierSettings,
    verify_session_token,
)


class VerifiedTokenCache:
    """Verified claims by SHA-256 of the whole token: a client reuses its token for many calls.

    Bounded (least recently used goes first); an entry is never served at or past the token's exp.
    """

    def __init__(self, max_entries: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[bytes, Claims] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(token: str) -> bytes:
        return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()

    def get(self, token: str) -> Claims | None:
        key = self._key(token)
        with self._lock:
            claims = self._entries.get(key)
            if claims is None:
                return None
            if self._clock() >= claims.exp:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return claims

    def put(self, token: str, claims: Claims) -> None:
        if self._clock() >= claims.exp:
            return
        key = self._key(token)
        with self._lock:
            self._entries[key] = claims
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class SessionVerifier:
    """verify_session_token behind the verified-token cache; one per process, shared by threads."""

    def __init__(
        self,
        settings: VerifierSettings,
        key_source: KeySource,
        cache: VerifiedTokenCache | None = None,
    ) -> None:
        self.settings = settings
        self.key_source = key_source
        self.cache = cache if cache is not None else VerifiedTokenCache()

    def verify(self, token: str) -> Claims:
        if isinstance(token, str) and len(token) <= MAX_TOKEN_LENGTH:
            cached = self.cache.get(token)
            if cached is not None:
                return cached
        claims = verify_session_token(token, self.settings, self.key_source)
        self.cache.put(token, claims)
        return claims
