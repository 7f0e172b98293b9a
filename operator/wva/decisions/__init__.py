"""Decision records: every cycle's inputs, numbers, rules, guards and outcome per model group."""

from wva.decisions.codes import ReasonCode
from wva.decisions.decide import GroupDecision, decide_group
from wva.decisions.record import DecisionRecord, VariantInput, VariantOutcome
from wva.decisions.store import DecisionStore

__all__ = [
    "DecisionRecord",
    "DecisionStore",
    "GroupDecision",
    "ReasonCode",
    "VariantInput",
    "VariantOutcome",
    "decide_group",
]
