"""Decisions recomputed off-line from Prometheus history: ``wva explain --prometheus`` and ``wva backtest``.

Both run the engine's own pure decision function (:func:`wva.decisions.decide_group`) on signals
read back from Prometheus with the collector's own query templates.
"""
