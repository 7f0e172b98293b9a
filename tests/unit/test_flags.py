"""wva.flags: the boolean words every environment flag shares."""

from __future__ import annotations

import pytest

from wva.collector import collector_v2_enabled
from wva.collector.v2.batching import batch_queries_enabled
from wva.flags import flag_word
from wva.settings import parse_bool


@pytest.mark.parametrize(("word", "value"), [("true", True), (" ON ", True), ("1", True), ("Yes", True),
                                             ("false", False), ("off", False), (" 0", False), ("NO", False)])
def test_flag_words_in_any_case(word: str, value: bool) -> None:
    assert flag_word(word) is value
    assert collector_v2_enabled(word) is value
    assert batch_queries_enabled(word) is value
    assert parse_bool(word) is value


@pytest.mark.parametrize("word", ["", "  ", "maybe", "enabled", "2"])
def test_anything_else_is_no_flag_word(word: str) -> None:
    assert flag_word(word) is None


def test_each_flag_keeps_its_own_meaning_for_empty() -> None:
    assert collector_v2_enabled("") is False and collector_v2_enabled(None) is False
    assert batch_queries_enabled("") is True and batch_queries_enabled(None) is True
    assert parse_bool(" ") is False
