"""A create's snapshot (or pending writes' values) encoded into its blob, before the command is
queued or on the writer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from checkpointd.config import Config
from checkpointd.errors import IntegrityError, InvalidRequestError
from checkpointd.ids import new_id
from checkpointd.requests import CreateRequest
from checkpointd.snapshots import EncodedSnapshot, SnapshotCodec, canonical_encode
from checkpointd.write.commands import EncodedCreate


def encode_create(codec: SnapshotCodec, config: Config, request: CreateRequest) -> EncodedCreate:
    """Encode a create's snapshot under its checkpoint id (the client's, else a new one) and
    check the client's claims.

    Pure CPU work; the caller runs it before queueing the command (off the event loop when
    the snapshot is big). Raises TooLargeError, IntegrityError, and InvalidRequestError (also
    for ``encrypted: false`` while ``enable_encryption`` is on).
    """
    if config.enable_encryption and request.encrypted is False:
        # Refused rather than ignored: a caller asking for plaintext must not be told "done"
        # while it is stored otherwise, nor get plaintext from a store that promises none.
        raise InvalidRequestError(
            "this store encrypts every snapshot (enable_encryption is on); leave encrypted out",
            field="encrypted",
        )
    checkpoint_id = request.checkpoint_id or new_id()
    compress = config.enable_compression if request.compressed is None else request.compressed
    encrypt = config.enable_encryption if request.encrypted is None else request.encrypted
    encoded = codec.encode(checkpoint_id, request.snapshot, compress=compress, encrypt=encrypt)
    _check_claims(request, encoded.checksum, encoded.size)
    return EncodedCreate(checkpoint_id, request, encoded)


def _check_claims(request: CreateRequest, checksum: str, size: int) -> None:
    """A client-supplied checksum or size must match the computed one (end-to-end integrity)."""
    if request.checksum is not None and request.checksum != checksum:
        raise IntegrityError(
            f"supplied checksum {request.checksum} does not match computed {checksum}"
        )
    if request.size is not None and request.size != size:
        raise IntegrityError(f"supplied size {request.size} does not match computed size {size}")


def encode_writes(
    codec: SnapshotCodec,
    checkpoint_id: str,
    values: Sequence[Any],
    *,
    compress: bool,
    encrypt: bool,
) -> EncodedSnapshot:
    """Encode pending writes' values into one blob bound to their checkpoint.

    The blob holds ``{"values": [...]}`` encoded like a snapshot (bytes allowed). Raises
    InvalidRequestError naming the bad value (``writes[2].value/x``), TooLargeError.
    """
    try:
        canonical = canonical_encode({"values": list(values)}, max_depth=65, binary=True)
    except InvalidRequestError as exc:
        reason = exc.message.removeprefix(f"{exc.field}: ")
        raise InvalidRequestError(reason, field=_write_field(exc.field)) from None
    return codec.encode_canonical(checkpoint_id, canonical, compress=compress, encrypt=encrypt)


def _write_field(field: str | None) -> str:
    """``snapshot/values/2/x`` (the pointer into the encoded object) as ``writes[2].value/x``."""
    prefix = "snapshot/values/"
    if field is None or not field.startswith(prefix):
        return "writes"
    index, _, rest = field.removeprefix(prefix).partition("/")
    return f"writes[{index}].value" + (f"/{rest}" if rest else "")
