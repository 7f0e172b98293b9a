"""wva: a Kubernetes operator that autoscales vLLM model variants from serving metrics."""

__version__ = "0.1.0"
