"""How the Django backend stores values: as they are (msgpack), or as pickles signed with a secret.

A signed pickle is ``TAG + HMAC-SHA256(secret, key, pickle) + pickle``; the HMAC
is checked with ``hmac.compare_digest`` before anything is unpickled, so a
directory written by someone without the secret cannot run code here. This is
the only module of the package that uses pickle, and it imports it inside the
two calls that need it: a process that stores msgpack values never loads it
through tierstore. The store itself stays msgpack-only.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from django.core.exceptions import ImproperlyConfigured

__all__ = ["BadSecret", "BadSecretText", "Codec", "Corrupt", "MsgpackCodec", "PickleCodec", "TAG"]

MAC_BYTES = hashlib.sha256().digest_size
TAG = b"TSP1"  # the format of a signed pickle: tag, HMAC, pickle


class BadSecret(ImproperlyConfigured, TypeError):  # type: ignore[misc]  # Django ships no type hints
    """A secret that is not ``str`` or ``bytes`` (an int would sign with that many zero bytes)."""


class BadSecretText(ImproperlyConfigured, ValueError):  # type: ignore[misc]  # Django ships no type hints
    """A ``str`` secret that is not valid Unicode (a lone surrogate): it has no UTF-8 bytes to sign with."""


class Corrupt(Exception):
    """A stored payload that its codec refuses (and never decodes)."""


class MsgpackCodec:
    """Values stored as they are: the store's msgpack rules apply.

    A signed pickle of ``serializer="pickle"`` (bytes that start with its tag) is
    not a value of this codec: it reads as a counted miss, and storing bytes that
    start with the tag raises ``ValueError`` (they would read as one).
    """

    name = "msgpack"
    refusal = "a signed pickle of serializer='pickle' is not a msgpack-mode value"

    def encode(self, key: str | bytes, value: Any) -> Any:
        if type(value) is bytes and value.startswith(TAG):
            raise ValueError(f"bytes starting with {TAG!r} read as a signed pickle: {self.refusal}")
        return value

    def decode(self, key: str | bytes, stored: Any) -> Any:
        if type(stored) is bytes and stored.startswith(TAG):
            raise Corrupt(self.refusal)
        return stored

    def verify(self, key: str | bytes, stored: Any) -> bool:
        return not (type(stored) is bytes and stored.startswith(TAG))


class PickleCodec:
    """Pickles signed with an HMAC-SHA256 under a secret, verified before they are unpickled."""

    name = "pickle"
    refusal = "the payload's HMAC does not match: written without this secret, or damaged"

    def __init__(self, secret: str | bytes) -> None:
        if not isinstance(secret, str | bytes | bytearray | memoryview):
            raise BadSecret(f"serializer='pickle' needs a str or bytes secret, got {type(secret).__name__}")
        if not secret:
            raise ImproperlyConfigured("serializer='pickle' needs a secret (OPTIONS 'secret' or settings.SECRET_KEY)")
        try:
            self._secret = secret.encode() if isinstance(secret, str) else bytes(secret)
        except UnicodeEncodeError as exc:
            raise BadSecretText(f"serializer='pickle' needs a secret that is valid Unicode: {exc}") from None

    def _mac(self, key: str | bytes, payload: bytes) -> bytes:
        try:
            raw_key = key.encode() if isinstance(key, str) else b"\xff" + key  # 0xff never starts UTF-8
        except UnicodeEncodeError as exc:  # as the store itself words it
            raise ValueError(f"key is not valid Unicode: {exc}") from None
        message = len(raw_key).to_bytes(4, "big") + raw_key + payload
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def encode(self, key: str | bytes, value: Any) -> bytes:
        import pickle  # here, not at the top: see the module doc

        payload = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        return TAG + self._mac(key, payload) + payload

    def verify(self, key: str | bytes, stored: Any) -> bool:
        """Whether ``stored`` is a payload signed under this secret for ``key`` (nothing is unpickled)."""
        if not isinstance(stored, bytes) or len(stored) < len(TAG) + MAC_BYTES or not stored.startswith(TAG):
            return False
        mac, payload = stored[len(TAG) : len(TAG) + MAC_BYTES], stored[len(TAG) + MAC_BYTES :]
        return hmac.compare_digest(mac, self._mac(key, payload))

    def decode(self, key: str | bytes, stored: Any) -> Any:
        if not self.verify(key, stored):
            raise Corrupt(self.refusal)
        import pickle  # only past the HMAC check

        return pickle.loads(stored[len(TAG) + MAC_BYTES :])


Codec = MsgpackCodec | PickleCodec
