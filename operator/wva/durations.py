"""Duration strings as Kubernetes users write them: Go syntax ("30s", "1m30s", "500ms") or seconds."""

from __future__ import annotations

import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Parse ``text`` into seconds. Accepts Go durations and plain non-negative numbers (seconds).

    Raises ValueError naming the text when it is neither.
    """
    raw = text.strip()
    if not raw:
        raise ValueError("empty duration")
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        if value < 0 or value != value or value in (float("inf"),):
            raise ValueError(f"duration {text!r} must be a finite number of seconds >= 0")
        return value
    if raw == "0":
        return 0.0
    pos = 0
    total = 0.0
    for match in _PART.finditer(raw):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(raw) or pos == 0:
        raise ValueError(f"invalid duration {text!r}; use e.g. '30s', '1m30s', '500ms' or a number of seconds")
    return total


def format_duration(seconds: float) -> str:
    """Render seconds compactly for logs and docs ("30s", "1m", "1.5s")."""
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:g}s"
