"""Snapshot encryption: AES-256-GCM with a keyring of one active key and any number of old ones.

Every key is known by its key id, a fingerprint that names the key without revealing it. Blobs
record the id of the key that encrypted them, so after a rotation the old key, kept among the
others, still opens them. Key material never appears in a message or a repr.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from checkpointd.errors import ConfigError, IntegrityError, InvalidRequestError

KEY_SIZE = 32
NONCE_SIZE = 12

_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")
_BASE64_PREFIX = "base64:"
_MIN_PASSPHRASE = 8
_REDACTED = "<secret>"  # what a ConfigError shows instead of the secret itself


def derive_key(secret: str, salt: bytes, *, setting: str = "encryption_key") -> bytes:
    """Turn a configured secret into a 32-byte AES-256 key.

    The secret is read as, in order: 64 hex digits (the key itself); ``base64:`` followed by the
    base64 of 32 bytes; otherwise a passphrase of at least 8 characters, stretched with scrypt
    (n=2**14, r=8, p=1) over ``salt``. Deterministic: equal secret and salt give equal keys.

    Args:
        secret: the configured secret.
        salt: random bytes kept with the store; only passphrases use it.
        setting: the config key the secret came from, named in errors.

    Raises:
        ConfigError: a base64 key is malformed or not 32 bytes, or a passphrase is too short.
    """
    check_secret(secret, setting=setting)
    if _HEX_KEY.fullmatch(secret):
        return bytes.fromhex(secret)
    if secret.startswith(_BASE64_PREFIX):
        return _decode_base64_key(secret.removeprefix(_BASE64_PREFIX), setting)
    kdf = Scrypt(salt=salt, length=KEY_SIZE, n=2**14, r=8, p=1)
    return kdf.derive(secret.encode("utf-8"))


def check_secret(secret: str, *, setting: str = "encryption_key") -> None:
    """Refuse a secret :func:`derive_key` would refuse, without deriving (no scrypt).

    Raises:
        ConfigError: a base64 key is malformed or not 32 bytes, or a passphrase is too short.
    """
    if _HEX_KEY.fullmatch(secret):
        return
    if secret.startswith(_BASE64_PREFIX):
        _decode_base64_key(secret.removeprefix(_BASE64_PREFIX), setting)
        return
    if len(secret) < _MIN_PASSPHRASE:
        reason = f"a passphrase needs at least {_MIN_PASSPHRASE} characters"
        raise ConfigError(setting, _REDACTED, reason)


def key_id(key: bytes) -> str:
    """The key's id: 16 hex digits of a domain-separated sha256, safe to log and store."""
    return hashlib.sha256(b"checkpointd key id\x00" + key).hexdigest()[:16]


class Keyring:
    """The keys snapshots are encrypted and decrypted with.

    ``active`` encrypts new snapshots (``None``: this keyring can only decrypt); ``others``
    are old keys kept so that snapshots encrypted before a rotation stay readable. Immutable.
    """

    __slots__ = ("_active_id", "_ciphers", "_keys")

    def __init__(self, active: bytes | None, others: Sequence[bytes] = ()) -> None:
        """Build a keyring from raw 32-byte keys.

        Raises:
            ConfigError: a key is not 32 bytes.
        """
        self._ciphers: dict[str, AESGCM] = {}
        self._keys: dict[str, bytes] = {}
        for key in [*others, *([] if active is None else [active])]:
            if len(key) != KEY_SIZE:
                raise ConfigError("encryption_key", _REDACTED, f"a key is {KEY_SIZE} bytes")
            self._ciphers[key_id(key)] = AESGCM(key)
            self._keys[key_id(key)] = key
        self._active_id = None if active is None else key_id(active)

    @classmethod
    def from_secrets(cls, active: str | None, others: Sequence[str], salt: bytes) -> Keyring:
        """Build a keyring from configured secrets, each read as :func:`derive_key` reads it.

        Raises:
            ConfigError: a secret is malformed (see :func:`derive_key`).
        """
        old = [derive_key(secret, salt, setting="encryption_old_keys") for secret in others]
        return cls(None if active is None else derive_key(active, salt), old)

    @property
    def active_id(self) -> str | None:
        """The id of the key new snapshots are encrypted with, or ``None`` if there is none."""
        return self._active_id

    @property
    def key_ids(self) -> frozenset[str]:
        """The ids of every key this keyring can open snapshots with."""
        return frozenset(self._ciphers)

    def derive(self, purpose: bytes) -> dict[str, bytes]:
        """A 32-byte key for another use from every key, by the id of the key it came from.

        HKDF-SHA256 with ``purpose`` as its info label, so the derived keys say nothing about
        the snapshot keys nor about keys derived for another purpose.
        """
        derived = {}
        for kid, key in self._keys.items():
            hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=purpose)
            derived[kid] = hkdf.derive(key)
        return derived

    def encrypt(self, plaintext: bytes, aad: bytes) -> tuple[str, bytes, bytes]:
        """Encrypt with the active key and a fresh random 96-bit nonce.

        Args:
            plaintext: the bytes to encrypt.
            aad: associated data: authenticated, not encrypted; decryption needs the same.

        Returns:
            ``(key_id, nonce, ciphertext)``; the ciphertext ends with the 16-byte GCM tag.

        Raises:
            InvalidRequestError: this keyring has no active key.
        """
        if self._active_id is None:
            raise InvalidRequestError("encryption requested but no encryption key is configured")
        nonce = os.urandom(NONCE_SIZE)
        ciphertext = self._ciphers[self._active_id].encrypt(nonce, plaintext, aad)
        return self._active_id, nonce, ciphertext

    def decrypt(
        self, key_id: str, nonce: bytes, ciphertext: bytes, aad: bytes, *, checkpoint_id: str
    ) -> bytes:
        """Decrypt and authenticate what :meth:`encrypt` produced.

        Never returns bytes that differ from what was encrypted: a wrong key, a changed
        ciphertext, nonce or associated data all fail.

        Raises:
            IntegrityError: ``key_id`` is not in this keyring, or authentication failed; both
                name ``checkpoint_id``.
        """
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise IntegrityError(unknown_key_message(key_id), checkpoint_id=checkpoint_id)
        try:
            return cipher.decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            raise IntegrityError(
                "decryption failed: wrong key or tampered data", checkpoint_id=checkpoint_id
            ) from None

    def __repr__(self) -> str:
        others = sorted(self._ciphers.keys() - {self._active_id})
        return f"Keyring(active={self._active_id!r}, others={others!r})"


def unknown_key_message(key_id: str) -> str:
    """The message for a snapshot encrypted with a key that is not configured, with the fix."""
    return (
        f"encrypted with key {key_id}, which is not configured"
        " (add the secret with that key id to encryption_old_keys)"
    )


def _decode_base64_key(text: str, setting: str) -> bytes:
    try:
        key = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ConfigError(setting, _REDACTED, "the text after 'base64:' is not base64") from None
    if len(key) != KEY_SIZE:
        reason = f"a base64 key must decode to {KEY_SIZE} bytes, got {len(key)}"
        raise ConfigError(setting, _REDACTED, reason)
    return key
