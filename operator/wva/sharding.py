"""Sharding: which of K operator processes decides which model groups.

With ``--shards K`` (``WVA_SHARDS``), K operator processes split the fleet. Each one decides, writes
status for, publishes gauges for and actuates only the model groups it owns; the others' VAs are not
even kept in its inventory. A *model group* here is every VariantAutoscaling of one model in one
namespace, whatever its accelerator, so the variants whose cost the engine weighs against each other
are always decided together.

The owner of ``(namespace, model)`` is ``jump_hash(key, K)`` where ``key`` is the first 8 bytes
(big-endian) of ``sha256("<namespace>/<model>")``: a namespace holds no ``/``, so two different pairs
never share the string. Both steps are pure integer and IEEE-double arithmetic, so every process, on
every machine and Python version, computes the same owner (Python's ``hash()`` is salted per process
and would not). Jump consistent hashing (Lamping and Veach, 2014) spreads the groups evenly and, when
K changes to K+1, moves only about 1/(K+1) of them, each to the new shard; ``key % K`` would move
almost all. The assignment is a contract between processes that may run different versions during a
rolling upgrade: its test pins sample owners, so an accidental change fails there first.

Each shard elects its own leader on its own Lease (:func:`shard_lease_name`), so each can have a hot
standby. ``--shard-index=ordinal`` takes the index from the trailing ``-<n>`` of the pod name
(a StatefulSet pod's ordinal).
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from typing import Final, Literal

ORDINAL: Final = "ordinal"
"""``--shard-index=ordinal``: the index is the pod name's StatefulSet ordinal."""

MAX_SHARDS: Final = 1024

_ORDINAL_SUFFIX = re.compile(r"-(0|[1-9][0-9]{0,8})$")
_MASK64 = (1 << 64) - 1


def shard_key(namespace: str, model_id: str) -> int:
    """The 64-bit key of a model group: the first 8 bytes of ``sha256("<namespace>/<model>")``."""
    digest = hashlib.sha256(f"{namespace}/{model_id}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big")


def jump_hash(key: int, buckets: int) -> int:
    """Lamping and Veach's jump consistent hash of a 64-bit ``key`` into ``[0, buckets)``."""
    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, got {buckets}")
    key &= _MASK64
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & _MASK64
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


@functools.lru_cache(maxsize=65536)
def shard_of(namespace: str, model_id: str, shards: int) -> int:
    """The shard in ``[0, shards)`` that owns the model group ``(namespace, model_id)``."""
    if shards == 1:
        return 0
    return jump_hash(shard_key(namespace, model_id), shards)


def shard_lease_name(base: str, shards: int, index: int) -> str:
    """The Lease a shard's replicas compete for: ``base`` itself when unsharded (compatible with a
    single-shard install), else ``<base>-shard-<index>``."""
    return base if shards == 1 else f"{base}-shard-{index}"


@dataclass(frozen=True, slots=True)
class ShardAssignment:
    """This process' shard: ``index`` of ``shards``. ``owns`` says whether a model group is ours."""

    shards: int = 1
    index: int = 0

    def __post_init__(self) -> None:
        check_shards(self.shards)
        check_index(self.index, self.shards)

    @property
    def sharded(self) -> bool:
        return self.shards > 1

    def owns(self, namespace: str, model_id: str) -> bool:
        return self.shards == 1 or shard_of(namespace, model_id, self.shards) == self.index

    def lease_name(self, base: str) -> str:
        return shard_lease_name(base, self.shards, self.index)

    @property
    def field_manager(self) -> str:
        """The name this process' writes carry in managedFields: ``wva``, or ``wva-shard-<i>`` when sharded,
        so the server itself shows which shard wrote a VA's status or scaled a Deployment."""
        return f"wva-shard-{self.index}" if self.sharded else "wva"

    def __str__(self) -> str:
        return f"{self.index}/{self.shards}"


# --- parsing (WVA_SHARDS, WVA_SHARD_INDEX, --shards, --shard-index) ----------------------------------
def check_shards(shards: int) -> int:
    if not 1 <= shards <= MAX_SHARDS:
        raise ValueError(f"the number of shards must be from 1 to {MAX_SHARDS}, got {shards}")
    return shards


def check_index(index: int, shards: int) -> int:
    if not 0 <= index < shards:
        raise ValueError(f"shard index {index} is out of range for {shards} shard(s): use 0 to {shards - 1}")
    return index


def parse_shards(value: str) -> int:
    """A shard count: a whole number from 1 to :data:`MAX_SHARDS`."""
    text = value.strip()
    if not text.isdigit() or not text.isascii():
        raise ValueError(f"must be a whole number from 1 to {MAX_SHARDS}")
    if len(text) > 5 or not 1 <= int(text) <= MAX_SHARDS:
        raise ValueError(f"must be from 1 to {MAX_SHARDS}")
    return int(text)


def parse_shard_index(value: str) -> int | Literal["ordinal"]:
    """A shard index (a whole number from 0), or ``ordinal`` (taken from the pod name later)."""
    text = value.strip()
    if text.lower() == ORDINAL:
        return ORDINAL
    if not text.isdigit() or not text.isascii():
        raise ValueError("must be a whole number from 0, or 'ordinal' (the StatefulSet ordinal of POD_NAME)")
    if len(text) > 5 or int(text) >= MAX_SHARDS:
        raise ValueError(f"must be below {MAX_SHARDS}")
    return int(text)


def ordinal_of(pod_name: str) -> int:
    """The StatefulSet ordinal of a pod name: its trailing ``-<n>``."""
    found = _ORDINAL_SUFFIX.search(pod_name.strip())
    if found is None:
        raise ValueError(
            f"the pod name {pod_name!r} does not end in -<ordinal> (a StatefulSet pod's name, e.g. wva-2); "
            "set POD_NAME, or give the index as a number"
        )
    return int(found.group(1))
