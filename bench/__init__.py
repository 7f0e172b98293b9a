"""The wva scale benchmark (``make bench`` / ``python -m bench.run``); see docs/performance.md."""
