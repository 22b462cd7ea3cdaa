"""A Bloom filter on MurmurHash3: textbook sizing, double hashing, a checked binary format.

Sizing follows the textbook formulas: for ``capacity`` keys at false-positive rate
``p`` the filter takes ``nbits = ceil(-capacity * ln p / (ln 2)^2)`` bits and
``nhashes = round(nbits / capacity * ln 2)`` probes. The probes of a key come from
one 128-bit MurmurHash3 of its encoded form (``codec.encode_key``, so ``"a"`` and
``b"a"`` are different keys, as in the store), split into two 64-bit halves h1 and h2:
probe ``i`` tests bit ``(h1 + i * h2) mod nbits`` (Kirsch and Mitzenmacher).

Each filter draws its own 32-bit seed (the widest mmh3 takes) from ``secrets`` and
saves it with its bits, so the positions of a key differ from one filter to the next
and cannot be precomputed. MurmurHash3 is not a cryptographic hash: the seed
defeats precomputed key lists, not an adversary who can probe the filter at length.

The bit array is a ``bytearray``: measured against big-int arithmetic (a shift of a
megabyte int per probe), a per-bit mask table and ``mmh3.hash64``, a bytearray walked
with an incremental position (``p += h2`` and one conditional subtraction instead of
a multiplication and a modulo per probe) and a single ``mmh3.hash128`` was fastest.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import struct
import threading
from collections.abc import Iterable

import mmh3

from .codec import encode_key
from .errors import shown

__all__ = ["BloomFilter", "MAX_FILTER_BYTES", "check_filter_size", "encode_keys", "probe_positions"]

_MAGIC = b"TSBF"
_FORMAT = 1
# magic, format, nhashes, seed, capacity, error rate, nbits, keys counted
_HEADER = struct.Struct("<4sBHIQdQQ")
_DIGEST_BYTES = 16
_LOW64 = (1 << 64) - 1
_MAX_SEED = (1 << 32) - 1
_MAX_HASHES = (1 << 16) - 1
_LN2 = math.log(2)
MAX_FILTER_BYTES = 8 * 1024**3  # decision: an in-process filter larger than this is a mistake, not a filter


def optimal_nbits(capacity: int, error_rate: float) -> int:
    """Bits a filter of ``capacity`` keys at ``error_rate`` needs: ``-n ln p / (ln 2)^2``."""
    return max(1, math.ceil(-capacity * math.log(error_rate) / (_LN2 * _LN2)))


def check_filter_size(capacity: int, error_rate: float, names: tuple[str, str] = ("capacity", "error_rate")) -> None:
    """A filter of these parameters must fit in memory (it is one bytearray): ``ValueError`` naming them."""
    try:
        nbytes = optimal_nbits(capacity, error_rate) // 8
        size = str(nbytes)
    except OverflowError:  # a capacity too large for a float is far past the bound
        nbytes, size = MAX_FILTER_BYTES + 1, "more than 10**300"
    if nbytes > MAX_FILTER_BYTES:
        raise ValueError(
            f"{names[0]} {shown(capacity)} at {names[1]} {error_rate!r} needs a {size}-byte filter; "
            f"the bound is {MAX_FILTER_BYTES} bytes (8 GiB)"
        )


def optimal_nhashes(nbits: int, capacity: int) -> int:
    """Probes per key that minimize false positives: ``(nbits / n) ln 2``, at least one."""
    return min(_MAX_HASHES, max(1, round(nbits / capacity * _LN2)))


def probe_positions(data: bytes, seed: int, nbits: int, nhashes: int) -> list[int]:
    """The bits a key in ``codec.encode_key`` form sets in a filter of these parameters, probe by probe.

    The same double hashing as ``BloomFilter.add_encoded`` (for stores of the filter
    elsewhere, such as the shared tier's Redis bitmap).
    """
    h = mmh3.hash128(data, seed)
    position = (h & _LOW64) % nbits
    step = (h >> 64) % nbits
    positions = []
    for _ in range(nhashes):
        positions.append(position)
        position += step
        if position >= nbits:
            position -= nbits
    return positions


class BloomFilter:
    """A set that can answer "certainly absent" or "probably present", never forgetting a key.

    ``len()`` counts the keys whose ``add`` set at least one new bit: adding a key
    again (or a key whose bits were all set already, a false positive) does not
    count it twice. ``add`` and ``update`` are thread-safe; ``in`` takes no lock
    (bits are only ever set, so a reader sees a key admitted once its ``add`` returned).
    """

    __slots__ = (
        "_bits",
        "_capacity",
        "_count",
        "_error_rate",
        "_lock",
        "_nbits",
        "_nhashes",
        "_ones",
        "_probes",
        "_seed",
    )

    def __init__(self, capacity: int, error_rate: float = 0.01, *, seed: int | None = None) -> None:
        _check_params(capacity, error_rate)
        if seed is None:
            seed = secrets.randbits(32)
        elif isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int or None, not {type(seed).__name__}")
        elif not 0 <= seed <= _MAX_SEED:
            raise ValueError(f"seed must be in [0, 2**32), got {seed}")
        nbits = optimal_nbits(capacity, error_rate)
        self._setup(capacity, float(error_rate), nbits, optimal_nhashes(nbits, capacity), seed)
        self._bits = bytearray((nbits + 7) // 8)

    def _setup(self, capacity: int, error_rate: float, nbits: int, nhashes: int, seed: int) -> None:
        self._capacity = capacity
        self._error_rate = error_rate
        self._nbits = nbits
        self._nhashes = nhashes
        self._probes = range(nhashes)
        self._seed = seed
        self._count = 0
        self._ones = 0
        self._lock = threading.Lock()

    # -- parameters -----------------------------------------------------------------

    @property
    def capacity(self) -> int:
        """The number of keys the filter was sized for."""
        return self._capacity

    @property
    def error_rate(self) -> float:
        """The target false-positive rate at ``capacity`` keys."""
        return self._error_rate

    @property
    def nbits(self) -> int:
        return self._nbits

    @property
    def nhashes(self) -> int:
        return self._nhashes

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def bits_set(self) -> int:
        """How many bits are 1 (what ``estimated_error_rate`` is computed from)."""
        return self._ones

    def __len__(self) -> int:
        return self._count

    def bit_array(self) -> bytes:
        """The bits: bit ``i`` is ``byte[i >> 3] >> (i & 7) & 1`` (least significant bit first)."""
        with self._lock:
            return bytes(self._bits)

    def estimated_error_rate(self) -> float:
        """The false-positive rate now: ``(fraction of bits set) ** nhashes``.

        Computed from the bits actually set rather than from ``len()``, so repeated
        adds of one key never make it look fuller than it is.
        """
        return float((self._ones / self._nbits) ** self._nhashes)

    # -- keys -------------------------------------------------------------------------

    def add(self, key: str | bytes) -> bool:
        """Admit ``key``; ``True`` when that set a new bit (the key was not admitted before)."""
        return self.add_encoded(encode_key(key))

    def update(self, keys: Iterable[str | bytes]) -> int:
        """Admit every key; all are validated first, so a bad key changes nothing. Returns keys newly counted."""
        encoded = encode_keys(keys)  # a single str or bytes is refused, not iterated
        before = self._count
        for data in encoded:
            self.add_encoded(data)
        return self._count - before

    def add_encoded(self, data: bytes) -> bool:
        """``add`` for a key already in ``codec.encode_key`` form (callers that encoded it anyway)."""
        h = mmh3.hash128(data, self._seed)
        m = self._nbits
        bits = self._bits
        position = (h & _LOW64) % m
        step = (h >> 64) % m
        new = 0
        with self._lock:
            for _ in self._probes:
                index = position >> 3
                mask = 1 << (position & 7)
                if not bits[index] & mask:
                    bits[index] |= mask
                    new += 1
                position += step
                if position >= m:
                    position -= m
            if new:
                self._ones += new
                self._count += 1
        return new > 0

    def __contains__(self, key: object) -> bool:
        h = mmh3.hash128(encode_key(key), self._seed)
        m = self._nbits
        bits = self._bits
        position = (h & _LOW64) % m
        step = (h >> 64) % m
        for _ in self._probes:
            if not bits[position >> 3] >> (position & 7) & 1:
                return False
            position += step
            if position >= m:
                position -= m
        return True

    # -- serialization ------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The filter as bytes: header, bits and a BLAKE2b checksum of both."""
        with self._lock:
            header = _HEADER.pack(
                _MAGIC,
                _FORMAT,
                self._nhashes,
                self._seed,
                self._capacity,
                self._error_rate,
                self._nbits,
                self._count,
            )
            body = header + self._bits
        return body + _digest(body)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> BloomFilter:
        """Rebuild a filter from ``to_bytes``; ``ValueError`` for anything truncated, damaged or foreign."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"from_bytes needs bytes, not {type(data).__name__}")
        raw = bytes(data)
        if len(raw) < _HEADER.size + _DIGEST_BYTES:
            raise ValueError(f"not a Bloom filter: {len(raw)} bytes is shorter than its header")
        magic, fmt, nhashes, seed, capacity, error_rate, nbits, count = _HEADER.unpack_from(raw)
        if magic != _MAGIC:
            raise ValueError(f"not a Bloom filter: magic {magic!r}, expected {_MAGIC!r}")
        if fmt != _FORMAT:
            raise ValueError(f"unsupported Bloom filter format {fmt} (this version reads {_FORMAT})")
        body, digest = raw[:-_DIGEST_BYTES], raw[-_DIGEST_BYTES:]
        if not secrets.compare_digest(digest, _digest(body)):
            raise ValueError("Bloom filter checksum mismatch: the data is truncated or damaged")
        bits = bytearray(body[_HEADER.size :])
        _check_loaded(capacity, error_rate, nbits, nhashes, len(bits))
        ones = int.from_bytes(bits, "little").bit_count()
        if nbits % 8 and bits[-1] >> (nbits % 8):
            raise ValueError("Bloom filter has bits set past nbits")
        if count > ones:
            raise ValueError(f"Bloom filter counts {count} keys but has only {ones} bits set")
        bloom = cls.__new__(cls)
        bloom._setup(capacity, error_rate, nbits, nhashes, seed)
        bloom._bits = bits
        bloom._count = count
        bloom._ones = ones
        return bloom

    def __repr__(self) -> str:
        return (
            f"BloomFilter(capacity={self._capacity}, error_rate={self._error_rate}, nbits={self._nbits}, "
            f"nhashes={self._nhashes}, keys={self._count})"
        )


def encode_keys(keys: object) -> list[bytes]:
    """Encode every key of an iterable of keys; a single str/bytes key is refused, not iterated."""
    if isinstance(keys, (str, bytes, bytearray, memoryview)):
        raise TypeError(
            f"expected an iterable of keys such as [key], not a single {type(keys).__name__}: "
            "a str or bytes is one key, not a sequence of keys"
        )
    try:
        iterator = iter(keys)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(f"expected an iterable of keys, not {type(keys).__name__}") from None
    return [encode_key(key) for key in iterator]


def _check_params(capacity: object, error_rate: object) -> None:
    if isinstance(capacity, bool) or not isinstance(capacity, int):
        raise TypeError(f"capacity must be an int, not {type(capacity).__name__}")
    if capacity <= 0:
        raise ValueError(f"capacity must be > 0, got {shown(capacity)}")
    if isinstance(error_rate, bool) or not isinstance(error_rate, (int, float)):
        raise TypeError(f"error_rate must be a number, not {type(error_rate).__name__}")
    if not 0.0 < error_rate < 1.0:
        raise ValueError(f"error_rate must be in (0, 1), got {error_rate!r}")
    check_filter_size(capacity, error_rate)


def _check_loaded(capacity: int, error_rate: float, nbits: int, nhashes: int, nbytes: int) -> None:
    if capacity <= 0 or not 0.0 < error_rate < 1.0:
        raise ValueError(f"Bloom filter has invalid parameters: capacity {capacity}, error rate {error_rate!r}")
    if nbits <= 0 or nhashes <= 0:
        raise ValueError(f"Bloom filter has invalid sizes: nbits {nbits}, nhashes {nhashes}")
    if nbytes != (nbits + 7) // 8:
        raise ValueError(f"Bloom filter holds {nbytes} bytes of bits; nbits {nbits} needs {(nbits + 7) // 8}")


def _digest(body: bytes) -> bytes:
    return hashlib.blake2b(body, digest_size=_DIGEST_BYTES).digest()
