"""Golden bitstreams: fixed seed-built weights + fixed input -> pinned SHA-256 of payload bytes and decoded tensor.

Regenerate after an intentional format change with ``GENERATE_EXPECTED=1 pytest test/test_codec_golden.py``
(writes test/expected/codec_golden.json); review the diff, bump the format version if old payloads break.
The TOFC model fingerprint is pinned too: if only it differs, the seed-built weights/tables differ on this platform
(torch RNG or float table construction), not the codec.
"""

import hashlib
import json
import os
import pathlib

import torch

from tofc_ros.codec import HyperpriorConfig, SelectiveEntropyModel, TofcCodec, load_codec

EXPECTED = pathlib.Path(__file__).parent / "expected" / "codec_golden.json"


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _compute() -> dict:
    torch.manual_seed(1234)
    model = SelectiveEntropyModel(HyperpriorConfig(d=64, n_e=4))
    model.update()
    g = torch.Generator().manual_seed(99)
    x = torch.randn(3, 16, 64, generator=g) * torch.linspace(0.2, 8.0, 64)
    codecs = {"tofc/1": TofcCodec(model=model), "fp16/1": load_codec("fp16/1"),
              "fp16-zstd/1": load_codec("fp16-zstd/1"), "quant-zstd/1": load_codec("quant-zstd/1", bits=6)}
    out = {"tofc_fingerprint": model.fingerprint_bytes.hex()}
    for name, codec in codecs.items():
        payload = codec.encode(x)
        out[name] = {"bytes": len(payload), "payload_sha256": _sha(payload),
                     "decoded_sha256": _sha(codec.decode(payload).numpy().tobytes())}
    return out


def test_golden_bitstreams():
    actual = _compute()
    if os.environ.get("GENERATE_EXPECTED") == "1":
        EXPECTED.parent.mkdir(exist_ok=True)
        EXPECTED.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n")
        print(f"wrote {EXPECTED}")  # then checked like any run: a regenerated file must still round-trip
    expected = json.loads(EXPECTED.read_text())
    assert actual["tofc_fingerprint"] == expected["tofc_fingerprint"], \
        "seed-built TOFC weights differ on this platform (RNG/table construction), not necessarily the codec"
    for name in ("tofc/1", "fp16/1", "fp16-zstd/1", "quant-zstd/1"):
        assert actual[name] == expected[name], f"{name}: bitstream or decoded tensor changed"
