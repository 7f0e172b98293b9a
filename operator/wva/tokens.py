"""Bearer tokens kept in files (mounted Secrets, service-account tokens), re-read when they change."""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)


class TokenFile:
    """A bearer token in a file, re-read when the file's modification time changes.

    The token itself is never logged; an unreadable file keeps the last token read. ``purpose`` only
    names the token in log lines ("Prometheus", "pod metrics").
    """

    def __init__(self, path: str, purpose: str = "bearer") -> None:
        self.path = path
        self.purpose = purpose
        self._lock = threading.Lock()
        self._mtime: int | None = None
        self._token: str | None = None

    def get(self) -> str | None:
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except OSError as exc:
            log.warning("%s token file unreadable path=%s error=%s", self.purpose, self.path, exc.strerror)
            return self._token
        with self._lock:
            if mtime != self._mtime:
                try:
                    with open(self.path, encoding="utf-8") as fh:
                        self._token = fh.read().strip() or None
                except OSError as exc:
                    log.warning("%s token file unreadable path=%s error=%s", self.purpose, self.path, exc.strerror)
                    return self._token
                self._mtime = mtime
                log.info("%s token loaded path=%s", self.purpose, self.path)
            return self._token
