"""The model file the backtest tests replay (unit and against a real Prometheus): one model with a cheap
L4 variant (1 to 4 replicas) and a premium H100 one (1 to 2), each starting at one replica."""

from __future__ import annotations

PODS = ("llama-cheap-5d4f8b7c9-x2x4z", "llama-premium-6c7d9f8b5-abcde")  # one recorded pod of each variant

VARIANTS = """\
variants:
  - name: cheap
    deployment: llama-cheap
    accelerator: L4
    cost: 5
    minReplicas: 1
    maxReplicas: 4
    initialReplicas: 1
  - name: premium
    deployment: llama-premium
    accelerator: H100
    cost: 20
    minReplicas: 1
    maxReplicas: 2
    initialReplicas: 1
"""


def model_file_text(model: str, namespace: str, thresholds: str) -> str:
    """The two variants' model file; ``thresholds`` holds the block's lines, indented."""
    return f"model: {model}\nnamespace: {namespace}\nthresholds:\n{thresholds}{VARIANTS}"
