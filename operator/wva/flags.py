"""The boolean words wva's environment flags accept: true/1/yes/on and false/0/no/off, in any case."""

from __future__ import annotations

__all__ = ["flag_word"]

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def flag_word(value: str) -> bool | None:
    """True or False for a flag word (surrounding spaces ignored); None for anything else, empty included.

    Each flag decides for itself what unset or empty means and how to word its error.
    """
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    return None
