"""Golden bitstreams of the exact paths: committed codec weights + PCG64 input -> pinned payload and decoded bytes.

What is pinned is only what the codec defines to be bit-exact on every machine:
  * the TOFC payload, given the committed integer networks and CDF tables (test/fixtures/, written once by
    tools/make_codec_fixture.py; re-running that script on another CPU may build other tables, so the file, not the
    script, is the fixture) and an input drawn from numpy's PCG64;
  * the decoded tensor of that payload (integer symbols + exact means);
  * the baselines' payloads: fp16 conversion, the float64 quantiser and zstd (zstandard is pinned in
    requirements/constraints.txt, so its bytes are fixed too), and the lossless image containers;
  * the container's header fields (fingerprints, image size, grid, shape, split point) inside those bytes.
Nothing here is built from torch's RNG or a BLAS product, which differ across CPUs.

Regenerate after an intentional format change with ``GENERATE_EXPECTED=1 pytest test/test_codec_golden.py``
(writes test/expected/codec_golden.json); review the diff, bump the format version if old payloads break.
"""

import hashlib
import json
import os
import pathlib

import numpy as np
import torch

from tofc_ros.codec import FrameContext, load_codec

HERE = pathlib.Path(__file__).parent
EXPECTED = HERE / "expected" / "codec_golden.json"
FIXTURE = HERE / "fixtures" / "codec_d64_e4.safetensors"
AVQ_FIXTURE = HERE / "fixtures" / "alignedvq_d64_g4r2k16.safetensors"  # test_codec_aligned_vq.build_codec()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def golden_input() -> torch.Tensor:
    """Tensor[3, 16, 64] float32 from PCG64: standard normals with a per-dimension spread of 0.2 .. 8."""
    rng = np.random.default_rng(99)
    x = rng.standard_normal((3, 16, 64)) * np.linspace(0.2, 8.0, 64)
    return torch.from_numpy(x.astype(np.float32))


# A 480x640 camera frame on a 1x2 grid: 3 tiles with the thumbnail; made after 26 vision layers of some backbone.
CONTEXT = FrameContext(bytes.fromhex("00112233445566778899aabbccddeeff"), (480, 640), (1, 2), 26)


def golden_image() -> np.ndarray:
    """uint8 [12, 20, 3] from PCG64."""
    return np.random.default_rng(5).integers(0, 256, (12, 20, 3), dtype=np.uint8)


def _compute() -> dict:
    x = golden_input()
    tofc = load_codec(FIXTURE)
    codecs = {
        "tofc/1": tofc,
        "fp16/1": load_codec("fp16/1"),
        "fp16-zstd/1": load_codec("fp16-zstd/1"),
        "quant-zstd/1": load_codec("quant-zstd/1", bits=6),
    }
    out = {"tofc_fingerprint": tofc.fingerprint.hex(), "input_sha256": _sha(x.numpy().tobytes())}
    for name, codec in codecs.items():
        payload = codec.encode(x, CONTEXT)
        out[name] = {
            "bytes": len(payload),
            "payload_sha256": _sha(payload),
            "decoded_sha256": _sha(codec.decode(payload).numpy().tobytes()),
        }
    # AlignedVQ: the hidden state inside the tower (after layer 1), decoded by lookups, adds and one multiply-add.
    avq = load_codec(AVQ_FIXTURE)
    out["alignedvq_fingerprint"] = avq.fingerprint.hex()
    payload = avq.encode(x, FrameContext(CONTEXT.backbone_fingerprint, (480, 640), (1, 2), 1))
    out["alignedvq/1"] = {
        "bytes": len(payload),
        "payload_sha256": _sha(payload),
        "decoded_sha256": _sha(avq.decode(payload).numpy().tobytes()),
    }
    img = golden_image()
    for name in ("rgb8/1", "placeholder-zstd/1"):  # lossless, no float path: pinned too
        codec = load_codec(name)
        payload = codec.encode(img)
        assert np.array_equal(codec.decode(payload), img)
        out[name] = {"bytes": len(payload), "payload_sha256": _sha(payload)}
    return out


def test_golden_bitstreams():
    actual = _compute()
    if os.environ.get("GENERATE_EXPECTED") == "1":
        EXPECTED.parent.mkdir(exist_ok=True)
        EXPECTED.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n")
        print(f"wrote {EXPECTED}")  # then checked like any run: a regenerated file must still round-trip
    expected = json.loads(EXPECTED.read_text())
    assert actual["input_sha256"] == expected["input_sha256"], "the PCG64 input changed (numpy's generator?)"
    assert actual["tofc_fingerprint"] == expected["tofc_fingerprint"], "the committed fixture file changed"
    assert actual["alignedvq_fingerprint"] == expected["alignedvq_fingerprint"], "the AlignedVQ fixture changed"
    for name in ("tofc/1", "alignedvq/1", "fp16/1", "fp16-zstd/1", "quant-zstd/1", "rgb8/1", "placeholder-zstd/1"):
        assert actual[name] == expected[name], f"{name}: bitstream or decoded tensor changed"


def test_fixture_tofc_round_trip_is_within_half_a_step():
    # The golden above would also pin a broken codec; this checks the pinned path decodes what was encoded.
    x = golden_input()
    codec = load_codec(FIXTURE)
    x_hat = codec.decode(codec.encode(x, CONTEXT))
    assert float((x_hat - x).abs().max()) <= codec.model.cfg.y_step / 2 + 1e-6
