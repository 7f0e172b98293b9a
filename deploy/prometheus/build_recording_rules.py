"""Write wva's recording rules (``wva-recording-rules.yaml``) from ``wva.collector.v2.recording``.

The rules file beside this script and its copy in the Helm chart (``files/wva-recording-rules.yaml``)
are generated from the module the operator reads them with, so the rules and the engine's queries of
their output cannot drift apart. Edit the module, never the YAML, and regenerate:

    python deploy/prometheus/build_recording_rules.py            # write both copies
    python deploy/prometheus/build_recording_rules.py --check    # exit 1 if either copy differs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wva.collector.v2.recording import rules_file_text

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
OUTPUTS = (
    HERE / "wva-recording-rules.yaml",
    REPO / "charts" / "workload-variant-autoscaler" / "files" / "wva-recording-rules.yaml",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a copy differs from the generated rules")
    args = parser.parse_args(argv)
    text = rules_file_text()
    stale = [path for path in OUTPUTS if not path.exists() or path.read_text(encoding="utf-8") != text]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(REPO)} differs from the generated rules; run {Path(__file__).name}")
        return 1 if stale else 0
    for path in stale:
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
