"""Unit-test configuration: the Hypothesis profiles of the fuzz tests (see ``tests/fuzzing.py``)."""

from __future__ import annotations

import pytest

import fuzzing

fuzzing.register_profiles()


def pytest_report_header(config: pytest.Config) -> str:
    budget = fuzzing.examples(100)
    return f"wva fuzz profile: {fuzzing.active_profile()} ({budget} examples for a test whose CI budget is 100)"
