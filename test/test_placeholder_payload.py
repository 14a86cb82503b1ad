"""The placeholder pixel payload: exact round trip, and typed refusals that allocate nothing from the header."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import zstandard

from tofc_ros.pipeline import placeholder_pixels as pp


def test_round_trip_is_exact():
    rgb = np.random.default_rng(1).integers(0, 256, (17, 31, 3), dtype=np.uint8)
    np.testing.assert_array_equal(pp.decode(pp.encode(rgb), 1000), rgb)


@pytest.mark.parametrize("mutate, fragment", [
    (lambda b: b[:5], "shorter"),
    (lambda b: b"XXXX" + b[4:], "magic"),
    (lambda b: b[:-3], "zstd"),
    (lambda b: b[:4] + struct.pack("<II", 100_000, 100_000) + b[12:], "outside"),
    (lambda b: b[:4] + struct.pack("<II", 3, 3) + b[12:], "declares"),
    (lambda b: b[:12] + b"\0\0\0\0" + b[16:], "CRC32"),
    (lambda b: b[:16] + zstandard.ZstdCompressor().compress(b"\0" * 10**6), "declares"),
])
def test_malformed_payloads_raise_the_typed_error(mutate, fragment):
    payload = pp.encode(np.zeros((4, 4, 3), np.uint8) + 7)
    with pytest.raises(pp.PlaceholderPayloadError, match=fragment):
        pp.decode(mutate(payload), max_pixels=1000)


def test_encode_rejects_non_rgb_arrays():
    with pytest.raises(ValueError, match="RGB uint8"):
        pp.encode(np.zeros((4, 4), np.uint8))
