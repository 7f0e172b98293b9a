"""What docs/demo.md says, read back so that tests can hold a real demo run (and the demo's own
options) to it. Each reader fails with the sentence it looked for when the doc no longer says it,
so a rewrite of the doc updates these readers instead of silently leaving them behind."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

DEMO_DOC = Path(__file__).resolve().parents[1] / "docs" / "demo.md"


def text() -> str:
    return DEMO_DOC.read_text()


def _find(pattern: str, where: str, what: str) -> re.Match[str]:
    match = re.search(pattern, where, re.S)
    assert match, f"docs/demo.md no longer says {what} (looked for /{pattern}/)"
    return match


@dataclass(frozen=True)
class DefaultWalkthrough:
    duration: float
    speed: float
    load_steps: tuple[float, ...]  # ramp from, ramp to, spike, ramp down to
    first_up_t: float
    cheap_start: int
    cheap_peak: int
    premium_start: int
    premium_peak: int
    first_down_t: float
    premium_down: tuple[int, int]
    cheap_down: tuple[int, int]


def default_walkthrough() -> DefaultWalkthrough:
    p = " ".join(_find(r"(?m)^- \*\*`default`\*\*(.*?)(?=^- \*\*`)", text(), "the default bullet").group(1).split())
    length = _find(r"\((\d+) s simulated, speed (\d+)", p, "the default scenario's length and speed")
    load = _find(r"a ramp from (\d+) to (\d+) requests/s, a spike to (\d+), a ramp down to (\d+)", p, "its load")
    first_up = _find(r"one per cycle from about t = (\d+) s", p, "when the first scale-up comes")
    cheap = _find(r"L4 variant .*?\((\d+) → (\d+) replicas\)", p, "the L4 variant's start and peak")
    premium = _find(r"H100 variant \((\d+) → (\d+)\)", p, "the H100 variant's step")
    first_down = _find(r"until about t = (\d+) s", p, "when the scale-down starts")
    downs = _find(r"H100 (\d+) → (\d+), then L4 (\d+) → (\d+)", p, "the order of the scale-downs")
    return DefaultWalkthrough(
        duration=float(length.group(1)), speed=float(length.group(2)),
        load_steps=tuple(float(x) for x in load.groups()),
        first_up_t=float(first_up.group(1)),
        cheap_start=int(cheap.group(1)), cheap_peak=int(cheap.group(2)),
        premium_start=int(premium.group(1)), premium_peak=int(premium.group(2)),
        first_down_t=float(first_down.group(1)),
        premium_down=(int(downs.group(1)), int(downs.group(2))),
        cheap_down=(int(downs.group(3)), int(downs.group(4))),
    )


def cycle_example() -> dict[str, object]:
    """The JSON example of one engine cycle under "JSON lines"."""
    block = _find(r"```json\n(\{\"event\": \"cycle\".*?)\n```", text(), "a JSON cycle example")
    example: dict[str, object] = json.loads(block.group(1))
    return example


def start_line_keys() -> set[str]:
    sentence = _find(r"The first line is\s+`\{\"event\": \"start\", \.\.\.\}` with (.*?)\. The last line",
                     text(), "the keys of the start line").group(1)
    return {"event"} | set(re.findall(r"`(\w+)`", sentence))


def end_line_keys() -> set[str]:
    line = _find(r"`\{\"event\": \"end\",(.*?)\}`", text(), "the keys of the end line").group(1)
    return {"event"} | set(re.findall(r"\"(\w+)\":", line))


def live_view_example() -> str:
    return _find(r"latest scale decisions, each with the engine's reason, for example\s+`([^`]+)`",
                 text(), "an example of the live view's decision lines").group(1)


def live_view_pattern() -> re.Pattern[str]:
    """The example line as a pattern: its numbers may differ, its words and layout may not."""
    example = live_view_example()
    parts = re.split(r"(\d+(?:\.\d+)?)", example)
    number = r"\d+(?:\.\d+)?"
    pattern = "".join(number if i % 2 else re.escape(part).replace(r"\ ", " +") for i, part in enumerate(parts))
    return re.compile(pattern)


def option_defaults() -> dict[str, str]:
    """``--option`` -> its default as the Options table gives it, for rows with a single `value` default."""
    section = _find(r"## Options\n(.*?)\n## ", text(), "the Options table").group(1)
    found: dict[str, str] = {}
    for row in section.splitlines():
        cells = [c.strip() for c in row.replace("\\|", "\0").strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`--"):
            continue
        option = cells[0].strip("`").split()[0]
        default = re.fullmatch(r"`([^`]+)`", cells[1])
        if default:
            found[option] = default.group(1)
    return found


def list_scenarios_example() -> dict[str, str]:
    """Scenario name -> the line `wva demo --list-scenarios` prints for it, as the console example shows."""
    block = _find(r"\$ wva demo --list-scenarios\n(.*?)\n```", text(), "the --list-scenarios example").group(1)
    rows: dict[str, str] = {}
    for line in block.splitlines():
        if line.strip() in ("", "..."):
            continue
        name, _, rest = line.partition(" ")
        rows[name] = rest.strip()
    return rows
