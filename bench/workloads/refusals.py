"""How long checkpointd takes to refuse input built to be expensive.

The tests check that these refusals do no work proportional to the input (the search text is
never split; a decompression bomb is never inflated past the limit); this measures how long
they take, which the tests do not assert.

- search text of 10 million characters, refused by its length (``build_match``);
- 200 MB of zeros compressed with gzip and with zstd, read with a 1 MB limit (``decompress``).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable

import zstandard

from bench.datasets import Datasets
from bench.report import Listing
from checkpointd.errors import InvalidRequestError, TooLargeError
from checkpointd.search.terms import build_match
from checkpointd.snapshots.compression import Compression, decompress

MiB = 1024 * 1024
BOMB = 200 * MiB
ROUNDS = 5


def gzip_bomb(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(MiB)
    return b"".join([*(compressor.compress(chunk) for _ in range(size // MiB)), compressor.flush()])


def zstd_bomb(size: int) -> bytes:
    compressor = zstandard.ZstdCompressor(level=3).compressobj(size=size)
    chunk = bytes(MiB)
    return b"".join([*(compressor.compress(chunk) for _ in range(size // MiB)), compressor.flush()])


def timed_us(refuse: Callable[[], object], refused: type[Exception]) -> tuple[float, float]:
    """The median and the slowest of ``ROUNDS`` refusals, in microseconds."""
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        try:
            refuse()
        except refused:
            times.append((time.perf_counter() - started) * 1e6)
        else:
            raise AssertionError(f"{refuse} was not refused")
    times.sort()
    return times[len(times) // 2], times[-1]


async def run(datasets: Datasets) -> list[Listing]:
    listing = Listing(
        f"refusing expensive input ({ROUNDS} rounds each)", ["input", "p50 µs", "max µs"]
    )
    text = "milestone " * 1_000_000
    cases: list[tuple[str, Callable[[], object], type[Exception]]] = [
        ("search text, 10M characters", lambda: build_match(text), InvalidRequestError),
    ]
    for name, algorithm, make in (
        ("gzip", Compression.GZIP, gzip_bomb),
        ("zstd", Compression.ZSTD, zstd_bomb),
    ):
        bomb = make(BOMB)
        cases.append(
            (
                f"{name} bomb, 200 MB of zeros, 1 MB limit",
                lambda bomb=bomb, algorithm=algorithm: decompress(bomb, algorithm, limit=MiB),
                TooLargeError,
            )
        )
    for name, refuse, refused in cases:
        p50, slowest = timed_us(refuse, refused)
        listing.rows.append({"input": name, "p50 µs": p50, "max µs": slowest})
    listing.notes.append("the tests bound memory and work, not time: these figures are the time")
    print(listing.render(), flush=True)
    return [listing]
