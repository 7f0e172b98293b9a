"""Serve a saved Prometheus data folder (``wva demo`` keeps one) for ``--prometheus-data``.

The folder is copied first, so the saved data stays as it was, and a local Prometheus binary (the
one the demo uses) serves the copy with no scrape target and no retention cut, for as long as the
command runs.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path


class SavedDataError(RuntimeError):
    """The folder is not usable, or no Prometheus binary can serve it; the message is one line."""


@contextlib.contextmanager
def serve_saved_data(folder: str | Path) -> Iterator[str]:
    """Yield the URL of a Prometheus serving a copy of ``folder``."""
    from wva.sim.prometheus import INSTALL_HINT, LocalPrometheus, find_prometheus_binary

    source = Path(folder)
    if not source.is_dir() or not (any(source.glob("wal")) or any(source.glob("01*"))):
        raise SavedDataError(f"{folder}: not a Prometheus data folder (no wal/ and no blocks)")
    binary = find_prometheus_binary()
    if binary is None:
        raise SavedDataError(f"--prometheus-data needs a Prometheus server binary; {INSTALL_HINT}")
    prometheus = LocalPrometheus(targets=[], binary=binary, retention="100y")
    try:
        shutil.copytree(source, prometheus.data_dir, ignore=shutil.ignore_patterns("lock"))
        try:
            prometheus.start()
        except (OSError, RuntimeError) as exc:
            raise SavedDataError(f"{folder}: Prometheus could not serve it: {exc}") from None
        yield prometheus.url
    finally:
        prometheus.close()
