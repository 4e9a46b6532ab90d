"""Compressing snapshot bytes, and decompressing them without trusting them.

Decompression is capped: it never produces more than ``limit`` bytes, so a small blob that
expands to gigabytes (a decompression bomb) is refused after allocating about ``limit`` bytes.
"""

from __future__ import annotations

import threading
import zlib
from enum import StrEnum
from typing import Any

import zstandard

from checkpointd.errors import ConfigError, IntegrityError, TooLargeError

_GZIP_WBITS = 16 + zlib.MAX_WBITS  # deflate inside a gzip wrapper (header and CRC-32 trailer)
_LEVELS = {"gzip": (0, 9, 6), "zstd": (1, 22, 3)}  # min, max, default
_CORRUPT = "compressed snapshot is corrupt"


class Compression(StrEnum):
    """How snapshot bytes are compressed; the values are the ``compression_algorithm`` setting."""

    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


def check_level(algorithm: Compression, level: int | None) -> None:
    """Check a compression level: gzip takes 0-9, zstd 1-22; ``None`` means the default.

    Raises:
        ConfigError: the level is out of range for ``algorithm``.
    """
    if level is None or algorithm is Compression.NONE:
        return
    low, high, _ = _LEVELS[algorithm]
    if not low <= level <= high:
        raise ConfigError("compression_level", level, f"{algorithm} takes {low} to {high}")


def compress(data: bytes, algorithm: Compression, level: int | None = None) -> bytes:
    """Compress ``data``; deterministic for equal input, algorithm and level.

    Args:
        data: the bytes to compress.
        algorithm: ``NONE`` returns ``data`` unchanged.
        level: gzip 0-9 (default 6), zstd 1-22 (default 3); ignored for ``NONE``.

    Raises:
        ConfigError: the level is out of range.
    """
    check_level(algorithm, level)
    if algorithm is Compression.NONE:
        return data
    chosen = _LEVELS[algorithm][2] if level is None else level
    if algorithm is Compression.GZIP:
        # zlib's gzip wrapper writes mtime 0 and no file name, so equal input gives equal bytes.
        return zlib.compress(data, chosen, wbits=_GZIP_WBITS)
    # The one-shot compressor records the content size, which decompress() relies on.
    compressed: bytes = _zstd_compressor(chosen).compress(data)
    return compressed


_LOCAL = threading.local()


def _zstd_compressor(level: int) -> Any:
    """One compressor per thread and level: building one costs more than compressing 1 KB,
    and a compressor must not be used by two threads at once."""
    cache: dict[int, Any] | None = getattr(_LOCAL, "compressors", None)
    if cache is None:
        cache = _LOCAL.compressors = {}
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level, write_checksum=True)
    return cache[level]


def decompress(data: bytes, algorithm: Compression, *, limit: int) -> bytes:
    """Decompress ``data``, producing at most ``limit`` bytes.

    Args:
        data: compressed bytes, as made by :func:`compress`.
        algorithm: how ``data`` was compressed.
        limit: the most bytes the result may have.

    Returns:
        The decompressed bytes, never longer than ``limit``.

    Raises:
        TooLargeError: the result would be longer than ``limit``. Its ``size`` is how much was
            seen before stopping (at least ``limit + 1``), not necessarily the full size.
        IntegrityError: ``data`` is corrupt, truncated, or has bytes after the end of the stream.
    """
    if algorithm is Compression.GZIP:
        return _gunzip(data, limit)
    if algorithm is Compression.ZSTD:
        return _unzstd(data, limit)
    if len(data) > limit:
        raise TooLargeError("decompressed snapshot", len(data), limit)
    return data


def _gunzip(data: bytes, limit: int) -> bytes:
    decompressor = zlib.decompressobj(wbits=_GZIP_WBITS)
    try:
        # max_length caps the output buffer, so a bomb costs limit + 1 bytes, not its full size.
        output = decompressor.decompress(data, limit + 1)
    except zlib.error:
        raise IntegrityError(_CORRUPT) from None
    if len(output) > limit:
        raise TooLargeError("decompressed snapshot", len(output), limit)
    if not decompressor.eof or decompressor.unused_data:
        raise IntegrityError(_CORRUPT)
    return output


def _unzstd(data: bytes, limit: int) -> bytes:
    try:
        declared = zstandard.get_frame_parameters(data).content_size
    except zstandard.ZstdError:
        raise IntegrityError(_CORRUPT) from None
    # compress() always records the content size. Requiring it lets the cap be checked before
    # any output exists; libzstd then refuses a frame whose output outgrows what it declared.
    if declared == zstandard.CONTENTSIZE_UNKNOWN:
        raise IntegrityError(_CORRUPT)
    if declared > limit:
        raise TooLargeError("decompressed snapshot", declared, limit)
    # A window larger than the whole output is never needed; refusing it bounds libzstd's memory.
    window = min(max(limit, 1 << 10), 1 << 31)
    decompressor = zstandard.ZstdDecompressor(max_window_size=window).decompressobj()
    try:
        output: bytes = decompressor.decompress(data)
    except zstandard.ZstdError:
        raise IntegrityError(_CORRUPT) from None
    if not decompressor.eof or decompressor.unused_data or len(output) != declared:
        raise IntegrityError(_CORRUPT)
    return output
