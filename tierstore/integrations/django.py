"""A Django cache backend over a ``TierStore``.

    CACHES = {
        "default": {
            "BACKEND": "tierstore.integrations.django.TierStoreCache",
            "LOCATION": "/var/cache/myapp",  # the store's directory
            "TIMEOUT": 300,
            "OPTIONS": {"memory_items": 50_000, "serializer": "msgpack"},
        }
    }

``LOCATION`` is the directory; its store is shared by every backend of the
process that names it (Django makes one backend object per thread and calls
``close()`` after each request, which gives the reference back: see
``registry.py``). With ``OPTIONS`` ``shared=`` (Redis), an empty ``LOCATION``
gives each process a private temp directory, so every worker process can take
the same settings. ``OPTIONS`` takes the store's settings (by their names, in
any case) plus ``serializer`` and ``secret``:

- ``serializer="msgpack"`` (the default): values are what the store takes
  (``None``, bool, int, float, str, bytes, list, dict; a tuple comes back as a
  list); anything else raises ``TypeError`` and nothing is stored.
- ``serializer="pickle"``: any picklable value (Django's page cache stores
  responses), allowed only with a secret (``secret``, by default
  ``settings.SECRET_KEY``). Each payload is stored with an HMAC-SHA256 of the
  key and the pickle, and the HMAC is checked before anything is unpickled: a
  payload that fails (written without the secret, or damaged) is a miss (and
  absent to ``add``, ``touch`` and ``delete``), counted in the store's ``stats()["corrupt_records"]``,
  and is never unpickled.

Django's rules hold: ``timeout=None`` (or infinity) keeps a value for ever, ``0`` or less
stores nothing (and ``touch`` with it expires the key now), the default is the
alias's ``TIMEOUT``; keys are made by ``KEY_PREFIX``, ``VERSION`` and
``KEY_FUNCTION`` and checked by ``validate_key``; a made key longer than 1024
characters is stored as its first 256 characters and a SHA-256 of the whole. ``incr``/``decr`` act on the
cached value, keep its expiry, raise ``ValueError`` for a missing key and are
atomic (``TierStore.update_value``: in shared mode, across processes too). ``clear()`` deletes every entry of
the directory (counters and indexes of the store stay). ``MAX_ENTRIES`` and
``CULL_FREQUENCY`` are not supported (tier 2 is bounded in bytes by
``disk_capacity_bytes``): they are accepted and ignored, with a warning.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings as django_settings
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.exceptions import ImproperlyConfigured

from ..store import TierStore
from .codecs import Codec, Corrupt, MsgpackCodec, PickleCodec
from .registry import STORE_SETTINGS, StoreHolder

__all__ = ["TierStoreCache", "PickleCodec", "MsgpackCodec"]

log = logging.getLogger("tierstore.integrations")

_MISSING: Any = object()
_EXPIRED: Any = object()  # a timeout of 0 or less: store nothing, expire now
_UNSUPPORTED = {"max_entries", "cull_frequency"}
_LONG_KEY = 1024  # characters; a longer made key is stored under a digest
_warned_unsupported: set[tuple[str, frozenset[str]]] = set()  # (location, option names) warned about


class TierStoreCache(BaseCache):  # type: ignore[misc]  # Django ships no type hints
    """Django's cache API over a shared ``TierStore`` (see the module's docstring)."""

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        super().__init__(params)
        settings, serializer, secret = _read_options(location, params.get("OPTIONS") or {})
        if not location and settings.get("shared") is None:
            raise ImproperlyConfigured("TierStoreCache needs LOCATION, the directory of its store (or OPTIONS shared=)")
        if serializer == "msgpack":
            self._codec: Codec = MsgpackCodec()
        elif serializer == "pickle":
            self._codec = PickleCodec(django_settings.SECRET_KEY if secret is None else secret)
        else:
            raise ImproperlyConfigured(f"OPTIONS serializer must be 'msgpack' or 'pickle', got {serializer!r}")
        try:
            self._holder = StoreHolder(location, settings)
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(f"TierStoreCache OPTIONS: {exc}") from exc

    @property
    def store(self) -> TierStore:
        """The directory's shared store (opened on use, and again after ``close()``)."""
        return self._holder.store

    # -- keys, timeouts, values -----------------------------------------------------

    def _key(self, key: Any, version: int | None) -> str | bytes:
        made = self.make_and_validate_key(key, version=version)
        if isinstance(made, str) and len(made) > _LONG_KEY:
            digest = hashlib.sha256(made.encode("utf-8", "surrogatepass")).hexdigest()
            return f"{made[:256]}#sha256:{digest}"
        if not isinstance(made, str | bytes):
            raise TypeError(f"a cache key must be made into a str or bytes, got {type(made).__name__}")
        return made

    def _ttl(self, timeout: Any) -> Any:
        """The store's ``ttl`` for a Django timeout: ``None`` (for ever), seconds, or ``_EXPIRED``."""
        if timeout is DEFAULT_TIMEOUT:
            timeout = self.default_timeout
        if timeout is None:
            return None
        seconds = float(timeout)
        if seconds == math.inf:
            return None  # for ever, as Django's own backends read it (NaN: the store's ValueError)
        return _EXPIRED if seconds <= 0 else seconds

    def _decode(self, store: TierStore, key: str | bytes, stored: Any, default: Any) -> Any:
        try:
            return self._codec.decode(key, stored)
        except Corrupt as exc:
            store.report_corrupt(key, str(exc))
            return default

    def _write(self, call: Callable[[], Any]) -> Any:
        """Run a store write, naming the serializer when msgpack refuses a value."""
        try:
            return call()
        except TypeError as exc:
            if isinstance(self._codec, MsgpackCodec):
                raise TypeError(
                    f"{exc} (TierStoreCache with serializer='msgpack' stores only msgpack values; "
                    "serializer='pickle' with a secret stores any picklable object)"
                ) from exc
            raise

    # -- Django's cache API -------------------------------------------------------------

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        made, ttl = self._key(key, version), self._ttl(timeout)
        stored = self._codec.encode(made, value)
        with self._holder as store:
            if ttl is _EXPIRED:
                return not self._holds(store, made)
            if self._write(lambda: store.add(made, stored, ttl=ttl)):
                return True
            if self._holds(store, made):
                return False
            store.delete(made)  # what is there fails the HMAC check: it counts as absent
            return bool(store.add(made, stored, ttl=ttl))

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        made = self._key(key, version)
        with self._holder as store:
            stored = store.get(made, _MISSING)
            return default if stored is _MISSING else self._decode(store, made, stored, default)

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> None:
        made, ttl = self._key(key, version), self._ttl(timeout)
        stored = self._codec.encode(made, value)
        with self._holder as store:
            if ttl is _EXPIRED:
                store.delete(made)
            else:
                self._write(lambda: store.set(made, stored, ttl=ttl))

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        made, ttl = self._key(key, version), self._ttl(timeout)
        with self._holder as store:
            if not self._holds(store, made):  # absent, or a payload its codec refuses: a miss
                return False
            if ttl is _EXPIRED:
                return store.delete(made)
            return store.touch(made, ttl=ttl)

    def delete(self, key: Any, version: int | None = None) -> bool:
        made = self._key(key, version)
        with self._holder as store:
            held = self._holds(store, made)  # a payload its codec refuses is removed, but answered as a miss
            return store.delete(made) and held

    def has_key(self, key: Any, version: int | None = None) -> bool:
        made = self._key(key, version)
        with self._holder as store:
            return self._holds(store, made)

    def _holds(self, store: TierStore, made: str | bytes) -> bool:
        """Whether ``made`` has a live value that its codec accepts (checked, never unpickled)."""
        stored = store.get(made, _MISSING)
        if stored is _MISSING:
            return False
        if self._codec.verify(made, stored):
            return True
        store.report_corrupt(made, self._codec.refusal)
        return False

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        made: dict[str | bytes, list[Any]] = {}  # keys that make one key (1 and "1") are all answered
        for key in keys:
            made.setdefault(self._key(key, version), []).append(key)
        with self._holder as store:
            found = store.get_many(list(made))
            answer = {}
            for made_key, stored in found.items():
                value = self._decode(store, made_key, stored, _MISSING)
                if value is not _MISSING:
                    answer.update(dict.fromkeys(made[made_key], value))
            return answer

    def set_many(
        self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> list[Any]:
        ttl = self._ttl(timeout)
        mapping = {self._key(key, version): value for key, value in data.items()}
        with self._holder as store:
            if ttl is _EXPIRED:
                store.delete_many(list(mapping))
                return []
            encoded = {made: self._codec.encode(made, value) for made, value in mapping.items()}
            self._write(lambda: store.set_many(encoded, ttl=ttl))
            return []

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        made = [self._key(key, version) for key in keys]
        with self._holder as store:
            store.delete_many(made)

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        made = self._key(key, version)
        result: list[Any] = []
        with self._holder as store:

            def bumped(stored: Any) -> Any:  # atomic in the store (in shared mode, retried in Redis)
                value = self._decode(store, made, stored, _MISSING)
                if value is _MISSING:
                    raise ValueError(f"Key '{key}' not found")
                result[:] = [value + delta]
                return self._codec.encode(made, result[0])

            if not store.update_value(made, bumped):  # its expiry kept exactly
                raise ValueError(f"Key '{key}' not found")
        return result[0]

    def decr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        return self.incr(key, -delta, version)

    def clear(self) -> None:
        with self._holder as store:
            store.clear()

    def close(self, **kwargs: Any) -> None:
        self._holder.close()

    async def aclose(self, **kwargs: Any) -> None:
        """``close()`` for async code (Django's own ``aclose`` does nothing: the reference would stay taken).

        In a worker thread: giving back the last reference closes the store, which flushes to disk.
        """
        await sync_to_async(self.close, thread_sensitive=False)(**kwargs)


def _read_options(location: str, options: Mapping[str, Any]) -> tuple[dict[str, Any], str, str | bytes | None]:
    """The store's settings, the serializer and the secret from ``OPTIONS``.

    ``MAX_ENTRIES``/``CULL_FREQUENCY`` warn once per location and names, not once per
    process: Django makes a backend per thread, but each configured cache is told.
    """
    settings: dict[str, Any] = {}
    serializer, secret = "msgpack", None
    ignored = []
    for name, value in options.items():
        lowered = str(name).lower()
        if lowered == "serializer":
            serializer = value
        elif lowered == "secret":
            secret = value
        elif lowered in _UNSUPPORTED:
            ignored.append(str(name))
        elif lowered in STORE_SETTINGS:
            settings[lowered] = value
        else:
            raise ImproperlyConfigured(f"TierStoreCache: unknown OPTIONS {name!r} (not a store setting)")
    told = (location, frozenset(ignored))
    if ignored and told not in _warned_unsupported:
        _warned_unsupported.add(told)
        log.warning(
            "TierStoreCache %s ignores OPTIONS %s: not supported, tier 2 is bounded by disk_capacity_bytes",
            location,
            ", ".join(sorted(ignored)),
        )
    return settings, serializer, secret
