"""The records a checkpoint leaves, and the names shared by everything that reads a checkpoint.

The checkpoint record in ``persist_path`` says what the last checkpoint did;
the generation record in the working directory names the checkpoint taken at
its last clean close; ``WORKING_ONLY`` records are never copied; ``NOT_DATA``
files are what LevelDB may leave in a directory it never finished creating.
It is separate from ``checkpoint`` (which takes checkpoints) because restore
and the read-only tools (``reader``, ``summary``, ``verify``) need the format
without the machinery that writes it.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .errors import CorruptRecord
from .keyspace import META_EXPIRY_INDEX, META_OPEN, meta_key

__all__ = [
    "CHECKPOINT_RECORD",
    "META_CHECKPOINT",
    "META_CHECKPOINT_GENERATION",
    "WORKING_ONLY",
    "NOT_DATA",
    "decode_checkpoint_info",
    "checkpoint_info",
]

# In the working directory only: the session marker (disk.py's), the generation
# of the checkpoint taken at the last clean close, and the mark of a complete
# expiry index (expiry.py's: a checkpoint killed half way may hold entries
# without their index records, so a restored store rebuilds its index).
META_CHECKPOINT_GENERATION = b"checkpoint_generation"
_OPEN_MARK = meta_key(META_OPEN)
WORKING_ONLY = frozenset({_OPEN_MARK, meta_key(META_CHECKPOINT_GENERATION), meta_key(META_EXPIRY_INDEX)})
# In the checkpoint directory only: what the last checkpoint did (a msgpack map:
# number, generation, time, complete, full, records, ...).
META_CHECKPOINT = b"checkpoint"
CHECKPOINT_RECORD = meta_key(META_CHECKPOINT)
#: Files LevelDB may leave in a directory it never finished creating: its first manifest (and the
#: temporary file of the CURRENT naming it) come before any record can be written.
NOT_DATA = frozenset({"LOCK", "LOG", "LOG.old", "MANIFEST-000001", "000001.dbtmp"})


def decode_checkpoint_info(data: bytes) -> dict[str, Any]:
    """The map a checkpoint record holds; ``CorruptRecord`` when it is not a msgpack map."""
    try:
        info = msgpack.unpackb(data, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise CorruptRecord(str(exc) or type(exc).__name__) from None
    if not isinstance(info, dict):
        raise CorruptRecord("the checkpoint record is not a map")
    return info


def checkpoint_info(raw: bytes | None) -> dict[str, Any]:
    """What a checkpoint record says; ``{}`` when it is missing or damaged."""
    if raw is None:
        return {}
    try:
        return decode_checkpoint_info(raw)
    except CorruptRecord:
        return {}
