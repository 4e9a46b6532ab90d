"""The stored form of a snapshot (a blob) and the pipeline that makes and opens it.

Pipeline: canonical msgpack -> checksum of those bytes -> compress -> encrypt -> blob.

Blob layout (self-describing, so settings may change without making old blobs unreadable)::

    offset  size  field
    0       4     magic b"CPS1"
    4       1     compression: 0 none, 1 gzip, 2 zstd
    5       1     flags: bit 0 = encrypted; other bits must be 0
    if encrypted:
    6       1     key id length n
    7       n     key id (ASCII lowercase hex, see crypto.key_id)
    7+n     12    nonce
    19+n    ...   AES-256-GCM ciphertext of the (maybe compressed) bytes, 16-byte tag last
    else:
    6       ...   the (maybe compressed) canonical bytes

The associated data of an encrypted blob is the header up to and including the key id, followed by
the checkpoint id in UTF-8. The header is self-delimiting, so this concatenation is unambiguous.
Editing the header, or moving the ciphertext to another checkpoint's row, fails authentication.
The nonce is left out only because it is chosen during encryption; GCM authenticates it anyway.

Unencrypted blobs have no authentication: gzip and zstd check their own streams, and
:meth:`SnapshotCodec.decode` with ``expected_checksum`` catches any other change. That includes
a cleared encrypted flag, which turns an encrypted blob into a (nonsensical) plain one, so
readers should always pass the recorded checksum.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from checkpointd.errors import IntegrityError, InvalidRequestError, TooLargeError
from checkpointd.snapshots.canonical import canonical_decode, canonical_encode, checksum
from checkpointd.snapshots.compression import Compression, check_level, compress, decompress
from checkpointd.snapshots.crypto import NONCE_SIZE, Keyring, unknown_key_message

MAGIC = b"CPS1"
DEFAULT_MAX_SIZE = 100 * 1024 * 1024  # the default of the max_checkpoint_size setting

_CODES = {Compression.NONE: 0, Compression.GZIP: 1, Compression.ZSTD: 2}
_BY_CODE = {code: algorithm for algorithm, code in _CODES.items()}
_ENCRYPTED = 0x01
_KEY_ID = re.compile(rb"[0-9a-f]{1,64}")


@dataclass(frozen=True, slots=True)
class EncodedSnapshot:
    """A snapshot ready to store, with what the checkpoint row records about it."""

    blob: bytes
    size: int  # bytes of the canonical encoding
    stored_size: int  # bytes of the blob
    checksum: str  # sha256 of the canonical encoding
    compression: Compression  # NONE when compression was off or did not make it smaller
    encrypted: bool

    @property
    def compressed(self) -> bool:
        """Whether the stored bytes are compressed."""
        return self.compression is not Compression.NONE


@dataclass(frozen=True, slots=True)
class BlobHeader:
    """What a blob's header says about the bytes that follow it."""

    compression: Compression
    key_id: str | None  # None: not encrypted
    nonce: bytes  # empty when not encrypted
    aad_prefix: bytes  # the header up to and including the key id
    payload_offset: int

    @property
    def encrypted(self) -> bool:
        """Whether the payload is encrypted."""
        return self.key_id is not None


def read_header(blob: bytes) -> BlobHeader:
    """Parse a blob's header.

    Raises:
        IntegrityError: the magic is wrong, or the header is truncated or holds unknown values.
    """
    if len(blob) < 6 or blob[:4] != MAGIC:
        raise IntegrityError("blob is not a checkpointd snapshot (bad magic or too short)")
    compression = _BY_CODE.get(blob[4])
    flags = blob[5]
    if compression is None or flags & ~_ENCRYPTED:
        raise IntegrityError("blob header is damaged (unknown compression or flags)")
    if not flags & _ENCRYPTED:
        return BlobHeader(compression, None, b"", blob[:6], 6)
    end = 7 + blob[6] if len(blob) > 6 else 7  # the key id ends here; its length is at 6
    raw_id = blob[7:end]
    if not _KEY_ID.fullmatch(raw_id) or len(blob) < end + NONCE_SIZE:
        raise IntegrityError("blob header is damaged (bad key id or truncated)")
    nonce = blob[end : end + NONCE_SIZE]
    return BlobHeader(compression, raw_id.decode("ascii"), nonce, blob[:end], end + NONCE_SIZE)


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotCodec:
    """Turns snapshots into blobs and back, by the settings it holds.

    Opening reads the compression and key id from the blob itself, so blobs written under other
    settings (another algorithm, a rotated key kept in the keyring) stay readable.
    """

    compression: Compression = Compression.GZIP
    compression_level: int | None = None
    keyring: Keyring | None = None
    max_size: int = DEFAULT_MAX_SIZE  # the most bytes a canonical encoding may have

    def __post_init__(self) -> None:
        """Check the level for the algorithm (``ConfigError`` when out of range)."""
        check_level(self.compression, self.compression_level)

    def encode(
        self, checkpoint_id: str, snapshot: Mapping[str, Any], *, compress: bool, encrypt: bool
    ) -> EncodedSnapshot:
        """Encode a snapshot into a blob bound to ``checkpoint_id``.

        Args:
            checkpoint_id: the checkpoint the blob belongs to; an encrypted blob opens only
                under this id.
            snapshot: the JSON-like snapshot.
            compress: compress with this codec's algorithm (skipped when it does not shrink).
            encrypt: encrypt with the keyring's active key.

        Raises:
            InvalidRequestError: the snapshot is not JSON-like, or ``encrypt`` is asked for
                without an active key.
            TooLargeError: the canonical encoding is bigger than ``max_size``.
        """
        canonical = canonical_encode(snapshot)
        return self.encode_canonical(checkpoint_id, canonical, compress=compress, encrypt=encrypt)

    def encode_canonical(
        self, checkpoint_id: str, canonical: bytes, *, compress: bool, encrypt: bool
    ) -> EncodedSnapshot:
        """Like :meth:`encode`, for bytes that are already the canonical encoding."""
        if len(canonical) > self.max_size:
            raise TooLargeError("snapshot", len(canonical), self.max_size)
        encryption = self._encryption_key() if encrypt else None
        algorithm, payload = self._compress(canonical, wanted=compress)
        head = MAGIC + bytes([_CODES[algorithm], _ENCRYPTED if encrypt else 0])
        if encryption is None:
            blob = head + payload
        else:
            keyring, active_id = encryption
            head += bytes([len(active_id)]) + active_id.encode("ascii")
            _, nonce, ciphertext = keyring.encrypt(payload, head + checkpoint_id.encode("utf-8"))
            blob = head + nonce + ciphertext
        return EncodedSnapshot(
            blob=blob,
            size=len(canonical),
            stored_size=len(blob),
            checksum=checksum(canonical),
            compression=algorithm,
            encrypted=encrypt,
        )

    def open(self, checkpoint_id: str, blob: bytes, *, expected_size: int | None = None) -> bytes:
        """Decrypt and decompress a blob back to the canonical bytes.

        Decompression stops past ``expected_size`` (the recorded size), else past ``max_size``:
        a blob that expands further (a decompression bomb, damage) costs no more memory.

        Raises:
            IntegrityError: the blob is damaged, was encrypted for another checkpoint, its key is
                not configured or wrong, or it expands past that limit; the message names
                ``checkpoint_id``.
        """
        limit = self.max_size if expected_size is None else expected_size
        with naming(checkpoint_id):
            header = read_header(blob)
            payload = blob[header.payload_offset :]
            if header.key_id is not None:
                if self.keyring is None:
                    raise IntegrityError(unknown_key_message(header.key_id))
                aad = header.aad_prefix + checkpoint_id.encode("utf-8")
                payload = self.keyring.decrypt(
                    header.key_id, header.nonce, payload, aad, checkpoint_id=checkpoint_id
                )
            try:
                return decompress(payload, header.compression, limit=limit)
            except TooLargeError:
                raise IntegrityError(f"snapshot expands past {limit} bytes") from None

    def rebind(self, from_id: str, to_id: str, blob: bytes) -> bytes:
        """The blob of ``from_id`` made the blob of ``to_id`` (a copy of a checkpoint).

        A plain blob is bound to no id and comes back as it is; an encrypted one is decrypted
        and encrypted again (the active key, a fresh nonce, ``to_id`` in the associated data),
        its compressed payload untouched.

        Raises:
            IntegrityError: as for :meth:`open` (the message names ``from_id``).
            InvalidRequestError: the blob is encrypted and no active key is configured.
        """
        with naming(from_id):
            header = read_header(blob)
            if header.key_id is None:
                return blob
            if self.keyring is None:
                raise IntegrityError(unknown_key_message(header.key_id))
            payload = self.keyring.decrypt(
                header.key_id,
                header.nonce,
                blob[header.payload_offset :],
                header.aad_prefix + from_id.encode("utf-8"),
                checkpoint_id=from_id,
            )
        keyring, active_id = self._encryption_key()
        head = blob[:5] + bytes([_ENCRYPTED, len(active_id)]) + active_id.encode("ascii")
        _, nonce, ciphertext = keyring.encrypt(payload, head + to_id.encode("utf-8"))
        return head + nonce + ciphertext

    def decode(
        self,
        checkpoint_id: str,
        blob: bytes,
        *,
        expected_checksum: str | None = None,
        expected_size: int | None = None,
    ) -> dict[str, Any]:
        """Open a blob and decode the snapshot in it.

        Args:
            checkpoint_id: the checkpoint the blob belongs to.
            blob: the stored bytes.
            expected_checksum: the checkpoint's recorded checksum; when given, the snapshot is
                returned only if its canonical bytes match it, so damage is never returned.
            expected_size: the checkpoint's recorded size (caps decompression, see ``open``).

        Raises:
            IntegrityError: as for :meth:`open`, a checksum mismatch, or bytes that are not a
                snapshot; the message names ``checkpoint_id``.
        """
        canonical = self.open(checkpoint_id, blob, expected_size=expected_size)
        with naming(checkpoint_id):
            if expected_checksum is not None and checksum(canonical) != expected_checksum:
                raise IntegrityError(
                    f"checksum mismatch: recorded {expected_checksum},"
                    f" stored bytes have {checksum(canonical)}"
                )
            return canonical_decode(canonical)

    def _encryption_key(self) -> tuple[Keyring, str]:
        """The keyring and the id of the key it encrypts with."""
        if self.keyring is None or self.keyring.active_id is None:
            raise InvalidRequestError("encryption requested but no encryption key is configured")
        return self.keyring, self.keyring.active_id

    def _compress(self, canonical: bytes, *, wanted: bool) -> tuple[Compression, bytes]:
        if not wanted:
            return Compression.NONE, canonical
        compressed = compress(canonical, self.compression, self.compression_level)
        if len(compressed) < len(canonical):
            return self.compression, compressed
        return Compression.NONE, canonical


@contextmanager
def naming(checkpoint_id: str) -> Iterator[None]:
    """Add the checkpoint id to an IntegrityError raised without one."""
    try:
        yield
    except IntegrityError as exc:
        if exc.checkpoint_id is not None:
            raise
        raise IntegrityError(exc.message, checkpoint_id=checkpoint_id) from None
