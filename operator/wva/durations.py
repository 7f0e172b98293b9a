"""Durations as Kubernetes users write them: Go syntax ("30s", "1m30s", "500ms") or plain seconds."""

from __future__ import annotations

import math
import re

_UNIT_SECONDS: dict[str, float] = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,  # micro sign
    "\u03bcs": 1e-6,  # Greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_SEGMENT = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Parse a Go ``time.ParseDuration`` string into seconds. Raises ValueError if it is not one."""
    s = text.strip()
    if not s:
        raise ValueError("empty duration")
    sign = 1.0
    if s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total = 0.0
    pos = 0
    while pos < len(s):
        match = _SEGMENT.match(s, pos)
        if match is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if math.isinf(total):
        raise ValueError(f"invalid duration {text!r}")
    return sign * total


def parse_duration(text: str) -> float:
    """Seconds from a Go duration or a plain number of seconds; negative, NaN and infinite values are errors."""
    raw = text.strip()
    try:
        value = float(raw)
    except ValueError:
        try:
            value = parse_go_duration(raw)
        except ValueError:
            raise ValueError(
                f"invalid duration {text!r}; use e.g. '30s', '1m30s', '500ms' or a number of seconds"
            ) from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"duration {text!r} must be a finite number of seconds >= 0")
    return value


def format_go_duration(seconds: float) -> str:
    """Render seconds the way Go prints a ``time.Duration`` (``6m0s``, ``1h2m3.5s``, ``250ms``)."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    rest = abs(seconds)
    if rest < 1.0:
        millis = round(rest * 1000.0, 3)
        return f"{sign}{millis:g}ms"
    hours, rest = divmod(rest, 3600.0)
    minutes, secs = divmod(rest, 60.0)
    secs = round(secs, 3)
    parts = [sign]
    if hours:
        parts.append(f"{int(hours)}h")
    if hours or minutes:
        parts.append(f"{int(minutes)}m")
    parts.append(f"{secs:g}s")
    return "".join(parts)
