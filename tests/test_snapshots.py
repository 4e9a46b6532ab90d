"""The snapshot pipeline: canonical encoding, checksum, compression, encryption and blobs."""

from __future__ import annotations

import base64
import datetime
import hashlib
import math
import random
import tracemalloc
import zlib
from typing import Any

import msgpack
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from checkpointd.errors import ConfigError, IntegrityError, InvalidRequestError, TooLargeError
from checkpointd.snapshots import (
    MAGIC,
    Compression,
    EncodedSnapshot,
    Keyring,
    SnapshotCodec,
    canonical_decode,
    canonical_encode,
    check_checksum_format,
    checksum,
    compress,
    decompress,
    derive_key,
    key_id,
    read_header,
)

KEY_1 = bytes(range(32))
KEY_2 = bytes(range(100, 132))
KEYRING = Keyring(KEY_1)
MiB = 1024 * 1024
SALT = b"0123456789abcdef"

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=30,
)
snapshots = st.dictionaries(st.text(), json_values, max_size=6)

ALL_WAYS = [(algorithm, encrypted) for algorithm in Compression for encrypted in (False, True)]


def codec(
    algorithm: Compression = Compression.GZIP,
    keyring: Keyring | None = KEYRING,
    max_size: int = MiB,
) -> SnapshotCodec:
    return SnapshotCodec(compression=algorithm, keyring=keyring, max_size=max_size)


def compressible_snapshot() -> dict[str, Any]:
    return {"sessions": ["s-1"], "state": {"log": ["step done"] * 200, "progress": 40}}


def shuffled(value: Any, rnd: random.Random) -> Any:
    """The same value with every dict's keys inserted in a random order."""
    if isinstance(value, dict):
        keys = list(value)
        rnd.shuffle(keys)
        return {key: shuffled(value[key], rnd) for key in keys}
    if isinstance(value, list):
        return [shuffled(item, rnd) for item in value]
    return value


def flip(blob: bytes, index: int, mask: int = 0x01) -> bytes:
    return blob[:index] + bytes([blob[index] ^ mask]) + blob[index + 1 :]


# --- canonical encoding and checksum -------------------------------------------------------------


@pytest.mark.parametrize(("algorithm", "encrypted"), ALL_WAYS)
@given(snapshot=snapshots)
def test_round_trip_every_way(
    algorithm: Compression, encrypted: bool, snapshot: dict[str, Any]
) -> None:
    """Any JSON-like snapshot decodes to itself under every compression, encrypted or not."""
    encoded = codec(algorithm).encode("cp-1", snapshot, compress=True, encrypt=encrypted)
    decoded = codec(algorithm).decode("cp-1", encoded.blob, expected_checksum=encoded.checksum)
    assert decoded == snapshot
    assert encoded.encrypted is encrypted


@given(snapshot=snapshots, rnd=st.randoms(use_true_random=False))
def test_canonical_bytes_ignore_dict_order(snapshot: dict[str, Any], rnd: random.Random) -> None:
    """Equal snapshots built in different key orders encode to the same bytes."""
    assert canonical_encode(shuffled(snapshot, rnd)) == canonical_encode(snapshot)


def test_canonical_encoding_sorts_keys_recursively() -> None:
    """The canonical bytes are msgpack with every object's keys in sorted order."""
    snapshot = {"b": {"y": 1, "x": [{"d": None, "c": 2.5}]}, "a": True}
    expected = msgpack.packb({"a": True, "b": {"x": [{"c": 2.5, "d": None}], "y": 1}})
    assert canonical_encode(snapshot) == expected


def test_tuples_encode_as_arrays() -> None:
    """A tuple is encoded as an array and decodes as a list."""
    assert canonical_decode(canonical_encode({"t": (1, "a")})) == {"t": [1, "a"]}


def test_integers_at_the_64_bit_bounds_round_trip() -> None:
    """The smallest signed and the largest unsigned 64-bit integers are accepted."""
    snapshot = {"low": -(2**63), "high": 2**64 - 1}
    assert canonical_decode(canonical_encode(snapshot)) == snapshot


@pytest.mark.parametrize(("algorithm", "encrypted"), ALL_WAYS)
def test_checksum_is_of_the_canonical_bytes(algorithm: Compression, encrypted: bool) -> None:
    """The checksum and size describe the canonical bytes, however the blob is stored."""
    snapshot = compressible_snapshot()
    canonical = canonical_encode(snapshot)
    encoded = codec(algorithm).encode("cp-1", snapshot, compress=True, encrypt=encrypted)
    assert encoded.checksum == "sha256:" + hashlib.sha256(canonical).hexdigest()
    assert encoded.size == len(canonical)
    assert encoded.stored_size == len(encoded.blob)


def test_checksum_format_accepts_a_checksum() -> None:
    """A checksum made by checksum() passes the format check."""
    check_checksum_format(checksum(b"x"))


@pytest.mark.parametrize(
    "value",
    [
        "sha256:" + "A" * 64,
        "sha256:" + "a" * 63,
        "sha256:" + "a" * 64 + "\n",
        "md5:" + "a" * 64,
        "a" * 64,
        "",
    ],
)
def test_malformed_checksum_is_invalid(value: str) -> None:
    """Anything but sha256: and 64 lowercase hex digits is an InvalidRequestError."""
    with pytest.raises(InvalidRequestError, match="checksum"):
        check_checksum_format(value)


@pytest.mark.parametrize(
    ("snapshot", "pointer"),
    [
        ({"state": {"config": {"x": b"raw"}}}, "snapshot/state/config/x:"),
        ({"tags": {"a", "b"}}, "snapshot/tags:"),
        ({"at": datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)}, "snapshot/at:"),
        ({"state": {1: "one"}}, "snapshot/state:"),
        ({"items": [0, 1, math.nan]}, "snapshot/items/2:"),
        ({"x": math.inf}, "snapshot/x:"),
        ({"n": 2**64}, "snapshot/n:"),
        ({"n": -(2**63) - 1}, "snapshot/n:"),
        ({"s": "\ud800"}, "snapshot/s:"),
        ({"a/b": {"c~d": b""}}, "snapshot/a~1b/c~0d:"),
        ([1, 2], "snapshot:"),
    ],
)
def test_non_json_value_names_its_path(snapshot: Any, pointer: str) -> None:
    """A value that is not JSON-like is an InvalidRequestError naming its JSON Pointer."""
    with pytest.raises(InvalidRequestError, match=f"^{pointer}"):
        canonical_encode(snapshot)


def nested(depth: int) -> dict[str, Any]:
    """An object holding ``depth`` nested objects, the outermost included."""
    snapshot: dict[str, Any] = {}
    for _ in range(depth - 1):
        snapshot = {"a": snapshot}
    return snapshot


def test_nesting_up_to_max_depth_is_accepted() -> None:
    """Exactly max_depth nested objects encode."""
    assert canonical_decode(canonical_encode(nested(64))) == nested(64)


def test_nesting_beyond_max_depth_is_invalid() -> None:
    """One level more than max_depth is an InvalidRequestError."""
    with pytest.raises(InvalidRequestError, match="nested deeper than 64 levels"):
        canonical_encode(nested(65))


def test_very_deep_nesting_is_invalid_without_exhausting_the_stack() -> None:
    """A snapshot nested 100,000 deep is refused cleanly, not with a RecursionError."""
    with pytest.raises(InvalidRequestError, match="nested deeper"):
        canonical_encode(nested(100_000))


@given(data=st.binary(max_size=200))
def test_canonical_decode_of_arbitrary_bytes(data: bytes) -> None:
    """Decoding arbitrary bytes gives an object or an IntegrityError, nothing else."""
    try:
        decoded = canonical_decode(data)
    except IntegrityError:
        return
    assert isinstance(decoded, dict)


def test_canonical_decode_refuses_a_non_object() -> None:
    """Valid msgpack that is not an object is an IntegrityError."""
    with pytest.raises(IntegrityError, match="do not hold an object"):
        canonical_decode(msgpack.packb([1, 2]))


# --- compression ---------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", list(Compression))
def test_compression_is_deterministic_and_reversible(algorithm: Compression) -> None:
    """Equal input compresses to equal bytes, which decompress to the input."""
    data = canonical_encode(compressible_snapshot())
    assert compress(data, algorithm) == compress(data, algorithm)
    assert decompress(compress(data, algorithm), algorithm, limit=len(data)) == data


@pytest.mark.parametrize(("algorithm", "level"), [("gzip", 10), ("gzip", -2), ("zstd", 0)])
def test_out_of_range_level_is_a_config_error(algorithm: str, level: int) -> None:
    """A level the algorithm does not take is a ConfigError naming compression_level."""
    with pytest.raises(ConfigError, match="compression_level"):
        SnapshotCodec(compression=Compression(algorithm), compression_level=level)


def gzip_bomb(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(MiB)
    parts = [compressor.compress(chunk) for _ in range(size // MiB)]
    return b"".join([*parts, compressor.flush()])


def zstd_bomb(size: int) -> bytes:
    compressor = zstandard.ZstdCompressor(level=3).compressobj(size=size)
    chunk = bytes(MiB)
    parts = [compressor.compress(chunk) for _ in range(size // MiB)]
    return b"".join([*parts, compressor.flush()])


@pytest.mark.parametrize(
    ("algorithm", "make_bomb"), [(Compression.GZIP, gzip_bomb), (Compression.ZSTD, zstd_bomb)]
)
def test_decompression_bomb_is_refused_without_inflating_it(
    algorithm: Compression, make_bomb: Any
) -> None:
    """200 MB of zeros with a 1 MB limit is a TooLargeError, raised within bounded memory.

    The bound on memory shows that the bomb was not inflated; how long the refusal takes is
    measured in ``bench`` (``python -m bench --only refusals``), not asserted here.
    """
    bomb = make_bomb(200 * MiB)
    tracemalloc.start()
    try:
        with pytest.raises(TooLargeError, match="decompressed snapshot") as caught:
            decompress(bomb, algorithm, limit=MiB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught.value.size > MiB
    assert caught.value.limit == MiB
    assert peak < 20 * MiB


def with_declared_size(frame: bytes, declared: int) -> bytes:
    """A zstd frame whose header claims ``declared`` content bytes (4-byte size field)."""
    descriptor = frame[4]
    assert descriptor >> 6 == 2, "expected a 4-byte content size field"
    assert not descriptor & 0x20, "expected a window descriptor byte"
    return frame[:6] + declared.to_bytes(4, "little") + frame[10:]


def test_zstd_frame_that_lies_about_its_size_is_refused_in_bounded_memory() -> None:
    """A frame whose output outgrows the size it declares is an IntegrityError, stopped early."""
    liar = with_declared_size(zstd_bomb(50 * MiB), MiB)
    tracemalloc.start()
    try:
        with pytest.raises(IntegrityError, match="corrupt"):
            decompress(liar, Compression.ZSTD, limit=4 * MiB)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * MiB


def test_zstd_frame_without_content_size_is_refused() -> None:
    """A zstd frame that does not declare its size did not come from compress(): corrupt."""
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(b"x" * 1000)
    with pytest.raises(IntegrityError, match="corrupt"):
        decompress(frame, Compression.ZSTD, limit=MiB)


@pytest.mark.parametrize("algorithm", [Compression.GZIP, Compression.ZSTD])
@pytest.mark.parametrize(
    "damage",
    [lambda data: data[:-5], lambda data: data + b"extra", lambda data: b"junk" + data],
    ids=["truncated", "trailing-bytes", "bad-start"],
)
def test_damaged_stream_is_corrupt(algorithm: Compression, damage: Any) -> None:
    """A truncated stream, bytes after its end, or a bad start are an IntegrityError."""
    data = damage(compress(canonical_encode(compressible_snapshot()), algorithm))
    with pytest.raises(IntegrityError, match="compressed snapshot is corrupt"):
        decompress(data, algorithm, limit=MiB)


def test_uncompressed_bytes_over_the_limit_are_too_large() -> None:
    """Uncompressed bytes longer than the limit are a TooLargeError too."""
    with pytest.raises(TooLargeError, match="over the limit of 10 bytes"):
        decompress(bytes(11), Compression.NONE, limit=10)


# --- keys ----------------------------------------------------------------------------------------


def test_passphrase_derivation_is_deterministic_per_salt() -> None:
    """A passphrase gives the same key for the same salt and another key for another salt."""
    first = derive_key("correct horse battery", SALT)
    assert derive_key("correct horse battery", SALT) == first
    assert derive_key("correct horse battery", b"another salt 16b") != first
    assert len(first) == 32


def test_hex_secret_is_the_key_itself() -> None:
    """64 hex digits, either case, are the 32 key bytes."""
    assert derive_key(KEY_1.hex(), SALT) == KEY_1
    assert derive_key(KEY_1.hex().upper(), SALT) == KEY_1


def test_base64_secret_is_the_key_itself() -> None:
    """base64: followed by the base64 of 32 bytes gives those bytes."""
    assert derive_key("base64:" + base64.b64encode(KEY_2).decode(), SALT) == KEY_2


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        ("base64:" + base64.b64encode(bytes(16)).decode(), "must decode to 32 bytes, got 16"),
        ("base64:not*base64", "is not base64"),
        ("short", "at least 8 characters"),
    ],
)
def test_bad_secret_is_a_config_error_that_hides_it(secret: str, reason: str) -> None:
    """A malformed base64 key or a short passphrase is a ConfigError that does not echo it."""
    with pytest.raises(ConfigError, match=reason) as caught:
        derive_key(secret, SALT)
    assert secret not in str(caught.value)


def test_key_id_identifies_without_revealing() -> None:
    """A key id is 16 hex digits, stable per key, distinct across keys, unrelated to the bytes."""
    assert key_id(KEY_1) == key_id(bytes(KEY_1))
    assert key_id(KEY_1) != key_id(KEY_2)
    assert len(key_id(KEY_1)) == 16
    assert key_id(KEY_1) not in KEY_1.hex()


def test_keyring_repr_shows_only_key_ids() -> None:
    """A keyring's repr names its key ids and no key material."""
    text = repr(Keyring(KEY_2, [KEY_1]))
    assert text == f"Keyring(active={key_id(KEY_2)!r}, others=[{key_id(KEY_1)!r}])"


def test_keyring_refuses_a_key_of_the_wrong_size() -> None:
    """A key that is not 32 bytes is a ConfigError."""
    with pytest.raises(ConfigError, match="32 bytes"):
        Keyring(bytes(16))


def test_keyring_from_secrets_derives_every_key() -> None:
    """from_secrets reads the active and the old secrets as derive_key does."""
    keyring = Keyring.from_secrets(KEY_2.hex(), ["an old passphrase"], SALT)
    old_id = key_id(derive_key("an old passphrase", SALT))
    assert keyring.active_id == key_id(KEY_2)
    assert keyring.key_ids == {key_id(KEY_2), old_id}


def test_each_encryption_uses_a_fresh_nonce() -> None:
    """Encrypting the same bytes twice gives different nonces and ciphertexts."""
    first = KEYRING.encrypt(b"state", b"aad")
    second = KEYRING.encrypt(b"state", b"aad")
    assert first[1] != second[1]
    assert first[2] != second[2]


# --- blobs ---------------------------------------------------------------------------------------


def encrypted_blob(algorithm: Compression = Compression.GZIP) -> EncodedSnapshot:
    return codec(algorithm).encode("cp-1", compressible_snapshot(), compress=True, encrypt=True)


def test_blob_header_records_how_it_was_stored() -> None:
    """An encrypted blob's header holds the magic, the algorithm and the active key id."""
    header = read_header(encrypted_blob(Compression.ZSTD).blob)
    assert encrypted_blob().blob.startswith(MAGIC)
    assert header.compression is Compression.ZSTD
    assert header.key_id == key_id(KEY_1)
    assert len(header.nonce) == 12


def test_blob_is_read_by_its_header_not_the_codec_settings() -> None:
    """A codec set to another algorithm still opens a blob, by what its header says."""
    encoded = encrypted_blob(Compression.ZSTD)
    assert codec(Compression.GZIP).decode("cp-1", encoded.blob) == compressible_snapshot()


def test_compression_is_skipped_when_it_does_not_shrink() -> None:
    """A snapshot that compression would not make smaller is stored uncompressed."""
    encoded = codec().encode("cp-1", {"a": 1}, compress=True, encrypt=False)
    assert encoded.compression is Compression.NONE
    assert not encoded.compressed


def test_compress_false_stores_uncompressed() -> None:
    """compress=False stores the canonical bytes even when they would compress well."""
    encoded = codec().encode("cp-1", compressible_snapshot(), compress=False, encrypt=False)
    assert encoded.blob == MAGIC + b"\x00\x00" + canonical_encode(compressible_snapshot())


def test_encode_canonical_matches_encode() -> None:
    """Encoding canonical bytes gives the same stored description as encoding the snapshot."""
    canonical = canonical_encode(compressible_snapshot())
    from_bytes = codec().encode_canonical("cp-1", canonical, compress=True, encrypt=False)
    encoded = codec().encode("cp-1", compressible_snapshot(), compress=True, encrypt=False)
    assert from_bytes == encoded


def test_oversize_snapshot_is_too_large() -> None:
    """A snapshot whose canonical encoding exceeds max_size is a TooLargeError with both sizes."""
    snapshot = {"blob": "x" * 2000}
    size = len(canonical_encode(snapshot))
    with pytest.raises(TooLargeError, match=f"^snapshot is {size} bytes") as caught:
        codec(max_size=1000).encode("cp-1", snapshot, compress=True, encrypt=False)
    assert caught.value.limit == 1000


def test_blob_over_the_reading_limit_is_an_integrity_error() -> None:
    """A stored blob that expands past the limit (a bomb, damage) is an IntegrityError naming
    the checkpoint, not a 413: nothing the reader sent was too large."""
    encoded = codec().encode("cp-1", compressible_snapshot(), compress=True, encrypt=True)
    with pytest.raises(IntegrityError, match="checkpoint cp-1: snapshot expands past 100 bytes"):
        codec(max_size=100).open("cp-1", encoded.blob)


def test_the_recorded_size_caps_decompression_instead_of_max_size() -> None:
    """Reads pass the recorded size: a checkpoint stored under a larger max_checkpoint_size
    still opens, and one byte less than recorded is refused before more is inflated."""
    encoded = codec().encode("cp-1", compressible_snapshot(), compress=True, encrypt=True)
    small = codec(max_size=100)
    assert checksum(small.open("cp-1", encoded.blob, expected_size=encoded.size)) == (
        encoded.checksum
    )
    with pytest.raises(IntegrityError, match=f"expands past {encoded.size - 1} bytes"):
        small.open("cp-1", encoded.blob, expected_size=encoded.size - 1)


@pytest.mark.parametrize("keyring", [None, Keyring(None, [KEY_1])], ids=["none", "no-active"])
def test_encryption_without_an_active_key_is_invalid(keyring: Keyring | None) -> None:
    """Asking for encryption with no active key is an InvalidRequestError."""
    with pytest.raises(InvalidRequestError, match="no encryption key is configured"):
        codec(keyring=keyring).encode("cp-1", {"a": 1}, compress=True, encrypt=True)


def test_wrong_key_fails_authentication() -> None:
    """A blob opened with another key under its key id is an IntegrityError, never garbage."""
    blob = encrypted_blob().blob
    forged = blob.replace(key_id(KEY_1).encode(), key_id(KEY_2).encode())
    with pytest.raises(IntegrityError, match="cp-1: decryption failed: wrong key or tampered"):
        codec(keyring=Keyring(KEY_2)).decode("cp-1", forged)


def test_old_key_still_opens_blobs_after_rotation() -> None:
    """After rotation, a blob encrypted with the old key opens while the old key is kept."""
    old_blob = encrypted_blob().blob
    rotated = codec(keyring=Keyring(KEY_2, [KEY_1]))
    assert rotated.decode("cp-1", old_blob) == compressible_snapshot()
    new_blob = rotated.encode("cp-1", {"a": 1}, compress=True, encrypt=True).blob
    assert read_header(new_blob).key_id == key_id(KEY_2)


def test_blob_encrypted_with_a_dropped_key_names_the_key() -> None:
    """Once the old key is dropped, its blobs are an IntegrityError naming key and checkpoint."""
    old_blob = encrypted_blob().blob
    message = f"checkpoint cp-1: encrypted with key {key_id(KEY_1)}, which is not configured"
    with pytest.raises(IntegrityError, match=message):
        codec(keyring=Keyring(KEY_2)).decode("cp-1", old_blob)


def test_encrypted_blob_without_a_keyring_names_the_key() -> None:
    """A codec with no keyring refuses an encrypted blob, naming its key id."""
    with pytest.raises(IntegrityError, match=f"encrypted with key {key_id(KEY_1)}"):
        codec(keyring=None).open("cp-1", encrypted_blob().blob)


def test_ciphertext_moved_to_another_checkpoint_fails() -> None:
    """An encrypted blob opened under another checkpoint id fails authentication."""
    blob = encrypted_blob().blob
    with pytest.raises(IntegrityError, match="cp-2: decryption failed"):
        codec().decode("cp-2", blob)


def decodes(blob: bytes) -> bool:
    """Whether the blob decodes under cp-1, or fails with an IntegrityError."""
    try:
        codec().decode("cp-1", blob)
    except IntegrityError:
        return False
    return True


@pytest.mark.parametrize("algorithm", list(Compression))
@pytest.mark.parametrize("mask", [0x01, 0x80])
def test_every_byte_flip_in_an_encrypted_blob_fails(algorithm: Compression, mask: int) -> None:
    """Changing any single byte of an encrypted blob makes decoding raise IntegrityError."""
    blob = encrypted_blob(algorithm).blob
    survivors = [index for index in range(len(blob)) if decodes(flip(blob, index, mask))]
    assert survivors == []


@pytest.mark.parametrize("algorithm", [Compression.GZIP, Compression.ZSTD])
def test_byte_flip_in_a_compressed_blob_fails(algorithm: Compression) -> None:
    """A changed byte inside an unencrypted compressed payload is an IntegrityError."""
    encoded = codec(algorithm).encode("cp-1", compressible_snapshot(), compress=True, encrypt=False)
    damaged = flip(encoded.blob, len(encoded.blob) // 2)
    with pytest.raises(IntegrityError, match="cp-1: "):
        codec(algorithm).decode("cp-1", damaged, expected_checksum=encoded.checksum)


def test_byte_flip_in_a_plain_blob_is_a_checksum_mismatch() -> None:
    """A changed byte in an uncompressed, unencrypted blob is caught by the checksum."""
    encoded = codec().encode("cp-1", {"name": "abc"}, compress=False, encrypt=False)
    damaged = encoded.blob.replace(b"abc", b"abd")
    with pytest.raises(IntegrityError, match="cp-1: checksum mismatch"):
        codec().decode("cp-1", damaged, expected_checksum=encoded.checksum)


@pytest.mark.parametrize("algorithm", list(Compression))
@given(data=st.data())
def test_decode_with_checksum_never_returns_damaged_data(
    algorithm: Compression, data: st.DataObject
) -> None:
    """With its checksum, a blob with one byte changed decodes to the original or raises."""
    encoded = codec(algorithm).encode("cp-1", compressible_snapshot(), compress=True, encrypt=False)
    index = data.draw(st.integers(0, len(encoded.blob) - 1))
    mask = data.draw(st.integers(1, 255))
    damaged = flip(encoded.blob, index, mask)
    try:
        decoded = codec(algorithm).decode("cp-1", damaged, expected_checksum=encoded.checksum)
    except (IntegrityError, TooLargeError):
        return
    assert decoded == compressible_snapshot()


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"CPS",
        b"XXXX\x00\x00\x80",
        MAGIC + b"\x07\x00",
        MAGIC + b"\x00\x02",
        MAGIC + b"\x00\x01",
    ],
    ids=["empty", "short", "bad-magic", "unknown-compression", "unknown-flag", "no-key-id"],
)
def test_malformed_header_names_the_checkpoint(blob: bytes) -> None:
    """A blob with a bad magic or a truncated or unknown header is an IntegrityError."""
    with pytest.raises(IntegrityError, match=r"^checkpoint cp-9: blob"):
        codec().open("cp-9", blob)


def test_truncated_encrypted_header_is_an_integrity_error() -> None:
    """An encrypted blob cut inside its nonce is an IntegrityError."""
    blob = encrypted_blob().blob[:20]
    with pytest.raises(IntegrityError, match="header is damaged"):
        codec().open("cp-1", blob)
