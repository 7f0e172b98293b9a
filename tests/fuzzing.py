"""Hypothesis profiles and strategies shared by the fuzz tests (``tests/unit/test_fuzz_*.py``).

Every fuzz test takes its settings from :func:`fuzz`, which starts from one of two profiles:

- ``wva-fuzz-ci`` (the default): derandomized and without an example database, so every run tries the
  same inputs and a failure reproduces exactly; each test runs the small budget it asks for.
- ``wva-fuzz-deep`` (``WVA_FUZZ_PROFILE=deep``): random inputs, failures kept in ``.hypothesis/``
  (git-ignored) and replayed first next time, and :data:`DEEP_FACTOR` times each test's budget.

``WVA_FUZZ_EXAMPLES=N`` runs N examples in every fuzz test, in either profile. Test modules
outside the fuzz files keep their own ``@settings``; nothing here loads a profile globally.
"""

from __future__ import annotations

import os
import string
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

CI_PROFILE = "wva-fuzz-ci"
DEEP_PROFILE = "wva-fuzz-deep"
DEEP_FACTOR = 50

_COMMON: dict[str, Any] = {
    "deadline": None,  # huge documents are legitimately slow to parse; the budget bounds the run
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
}


def register_profiles() -> None:
    settings.register_profile(CI_PROFILE, derandomize=True, database=None, print_blob=False, **_COMMON)
    settings.register_profile(DEEP_PROFILE, derandomize=False, print_blob=True, **_COMMON)


register_profiles()


def active_profile() -> str:
    """``deep`` (or the full profile name) in ``WVA_FUZZ_PROFILE`` selects the deep profile."""
    chosen = os.environ.get("WVA_FUZZ_PROFILE", "").strip().lower()
    return DEEP_PROFILE if chosen in ("deep", DEEP_PROFILE) else CI_PROFILE


def examples(budget: int) -> int:
    """How many examples a test with this CI budget runs under the active profile and env."""
    override = os.environ.get("WVA_FUZZ_EXAMPLES", "").strip()
    if override:
        return max(1, int(override))
    return budget * DEEP_FACTOR if active_profile() == DEEP_PROFILE else budget


def fuzz(budget: int) -> settings:
    """Settings for one fuzz test: the active profile with ``budget`` examples (scaled, see above)."""
    return settings(settings.get_profile(active_profile()), max_examples=examples(budget))


def fuzz_known_bug(budget: int) -> settings:
    """Settings for an ``xfail`` fuzz test of a known bug: stop at the first failing example.

    Shrinking a failure that is expected costs minutes (a RecursionError on every attempt); the
    reason of the xfail mark already describes the minimal input.
    """
    return settings(fuzz(budget), phases=[Phase.explicit, Phase.generate], report_multiple_bugs=False)


# --- strategies ------------------------------------------------------------------------------------

#: Strings parsers trip over: number spellings Prometheus and YAML use, empties, whitespace, control chars.
AWKWARD_STRINGS = (
    "", " ", "\t", "\n", "\x00", "NaN", "nan", "+Inf", "-Inf", "Inf", "inf", "-inf", ".nan", ".inf", "-.inf",
    "1e308", "1e309", "-1", "-0", "0", "0.0", "1", "1.5", "0x10", "1_000", "١٢", "true", "false", "null", "~",
    "{}", "[]", "{{", "}}", "%s", "%(x)s", "'", '"', "\\", "é", "\U0001f600", "\ud800", "a" * 300,
)

def huge_integers() -> st.SearchStrategy[int]:
    """Integers beyond the float range (OverflowError on ``float()``), some too long for ``str`` (more
    than 4300 digits: ValueError). Built, not sampled: ``sampled_from`` cannot repr the long ones."""
    return st.one_of(
        st.integers(min_value=2**1024, max_value=2**1100),
        st.integers(min_value=-(2**1100), max_value=-(2**1024)),
        st.integers(min_value=4301, max_value=4400).map(lambda digits: 10**digits),
    )


def awkward_text(max_size: int = 40) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(AWKWARD_STRINGS), st.text(max_size=max_size))


def scalars(*, huge_ints: bool = True, non_finite: bool = True) -> st.SearchStrategy[Any]:
    """JSON-ish leaves: None, bools, ints (optionally beyond float range), floats, awkward strings."""
    ints: st.SearchStrategy[int] = st.integers(min_value=-(2**70), max_value=2**70)
    if huge_ints:
        ints = st.one_of(ints, huge_integers())
    return st.one_of(
        st.none(),
        st.booleans(),
        ints,
        st.floats(allow_nan=non_finite, allow_infinity=non_finite),
        awkward_text(),
    )


def json_values(
    *, huge_ints: bool = True, non_finite: bool = True, max_leaves: int = 12
) -> st.SearchStrategy[Any]:
    """Random JSON-shaped documents (dicts with string keys, lists, scalars)."""
    return st.recursive(
        scalars(huge_ints=huge_ints, non_finite=non_finite),
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(awkward_text(12), children, max_size=4),
        ),
        max_leaves=max_leaves,
    )


def nested(depth: int, leaf: Any = 1, *, as_dict: bool = False) -> Any:
    """``depth`` levels of lists (or single-key dicts) around ``leaf``, built without recursion."""
    value = leaf
    for _ in range(depth):
        value = {"a": value} if as_dict else [value]
    return value


def deep_documents(max_depth: int = 600) -> st.SearchStrategy[Any]:
    """Deeply nested lists or dicts: what a JSON decoder can still hand over (its limit is ~1000)."""
    return st.builds(nested, st.integers(min_value=1, max_value=max_depth), scalars(huge_ints=False),
                     as_dict=st.booleans())


_YAML_TOKENS = [
    ":", ": ", "- ", "\n", "  ", "[", "]", "{", "}", ",", "#", "&a ", "*a", "? ", "|", ">", "'", '"', "~", "::",
    "null", "true", "yes", "0", "1.5", "-3", "x",
    ".nan", ".inf", "-.inf", "1e3", "0x1f", "0b", "2026-01-01", "1:30", "default", "model_id", "namespace",
    "kvCacheThreshold", "queueLengthThreshold", "kvSpareTrigger", "queueSpareTrigger", "shadow",
    "strictUpstream", "scaleDownStabilizationWindow", "5m", "300s", "<<", "%YAML 1.1\n", "---\n", "...\n",
    "\t", "\x00", "\ufeff",
]
_YAML_TAGS = ["!!str ", "!!int ", "!!float ", "!!bool ", "!!timestamp ", "!!binary ", "!!set ", "!!python/object "]


def yaml_texts(max_size: int = 200, *, tags: bool = True) -> st.SearchStrategy[str]:
    """Text made of YAML's syntax characters and words, so most of it reaches the constructor.

    ``tags=False`` leaves out explicit tags (``!!int``, ``!!timestamp``...), whose constructors raise
    plain ValueError, KeyError or AttributeError in PyYAML.
    """
    tokens = st.sampled_from([*(_YAML_TAGS if tags else []), *_YAML_TOKENS])
    return st.one_of(
        st.lists(st.one_of(tokens, st.text(alphabet=string.printable, max_size=4)), max_size=40).map("".join)
        .filter(lambda s: len(s) <= max_size),
        st.text(max_size=max_size),
    )


def mutate(doc: Any, path: tuple[str | int, ...], value: Any) -> Any:
    """A deep copy of ``doc`` with the item at ``path`` replaced by ``value`` (``DELETE`` removes it, if there)."""
    import copy

    result = copy.deepcopy(doc)
    target = result
    for step in path[:-1]:
        target = target[step]
    if value is DELETE:
        if isinstance(target, dict):
            target.pop(path[-1], None)
        else:
            del target[path[-1]]
    else:
        target[path[-1]] = value
    return result


DELETE: Any = object()

