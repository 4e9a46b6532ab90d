"""The snapshot pipeline: canonical msgpack, checksum, compression, encryption, blobs.

Pure functions and frozen values; nothing here touches the database or the network.
"""

from checkpointd.snapshots.blob import (
    DEFAULT_MAX_SIZE,
    MAGIC,
    BlobHeader,
    EncodedSnapshot,
    SnapshotCodec,
    read_header,
)
from checkpointd.snapshots.canonical import (
    CHECKSUM_PATTERN,
    canonical_decode,
    canonical_encode,
    check_checksum_format,
    checksum,
)
from checkpointd.snapshots.compression import Compression, check_level, compress, decompress
from checkpointd.snapshots.crypto import KEY_SIZE, NONCE_SIZE, Keyring, derive_key, key_id

__all__ = [
    "CHECKSUM_PATTERN",
    "DEFAULT_MAX_SIZE",
    "KEY_SIZE",
    "MAGIC",
    "NONCE_SIZE",
    "BlobHeader",
    "Compression",
    "EncodedSnapshot",
    "Keyring",
    "SnapshotCodec",
    "canonical_decode",
    "canonical_encode",
    "check_checksum_format",
    "check_level",
    "checksum",
    "compress",
    "decompress",
    "derive_key",
    "key_id",
    "read_header",
]
