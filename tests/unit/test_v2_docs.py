"""The examples in docs/collector-v2.md run, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "collector-v2.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def test_doc_examples_run() -> None:
    blocks = _BLOCK.findall(DOC.read_text())
    assert len(blocks) >= 4
    namespace: dict[str, object] = {"__name__": "collector_v2_doc"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{DOC.name}[python block {i}]", "exec"), namespace)
    assert "StaticSource" in namespace and "collector" in namespace
