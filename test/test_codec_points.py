"""Operating-point bundles: one file, every point's codec and fingerprint, payloads identified by their header."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from tofc_ros.codec import FrameContext, load_codec, peek_header
from tofc_ros.codec.points import OperatingPoint, OperatingPoints

FIXTURE = Path(__file__).parent / "fixtures" / "codec_d64_e4.safetensors"


@pytest.fixture(scope="module")
def codec():
    return load_codec(str(FIXTURE))


def _points():
    return [
        OperatingPoint("all", "fp16-zstd/1", 0, {"level": 3}, bytes=9e5, device_ms=230.0, server_ms=350.0),
        OperatingPoint("tofc-16", "tofc/1", 16, learned=0, bytes=2200.0, accuracy=0.5),
        OperatingPoint("tofc-8", "tofc/1", 8, learned=0, bytes=1100.0),
        OperatingPoint("jpeg", "jpeg/1", options={"quality": 30}),
    ]


def _features(n_c: int) -> torch.Tensor:
    rng = np.random.default_rng(3)  # PCG64: the same features everywhere
    return torch.from_numpy(rng.standard_normal((2, n_c, 64)).astype(np.float32))


CONTEXT = FrameContext(bytes(16), (384, 768), (1, 2), 3)


def test_a_bundle_round_trips_through_one_file_and_identifies_each_payload(codec, tmp_path):
    path = tmp_path / "points.safetensors"
    OperatingPoints(_points(), [codec]).save(path)
    bundle = OperatingPoints.load(path)
    assert bundle.points == tuple(_points())
    assert [c.fingerprint for c in bundle.learned_codecs()] == [codec.fingerprint]
    for point in bundle.points:
        c = bundle.codec(point)
        if point.kind == "image":
            payload = c.encode(np.zeros((32, 48, 3), np.uint8))
        else:
            payload = c.encode(_features(point.n_c or 729), CONTEXT)
        assert bundle.identify(peek_header(payload)) == point
    other = load_codec("fp16/1").encode(_features(8), CONTEXT)
    assert bundle.identify(peek_header(other)) is None  # not one of this bundle's points


def test_a_bundle_refuses_points_a_payload_cannot_tell_apart(codec):
    twins = [OperatingPoint("a", "tofc/1", 16, learned=0), OperatingPoint("b", "tofc/1", 16, learned=0)]
    with pytest.raises(ValueError, match="cannot tell them apart"):
        OperatingPoints(twins, [codec])
    jpegs = [OperatingPoint("q30", "jpeg/1", options={"quality": 30}), OperatingPoint("q80", "jpeg/1")]
    with pytest.raises(ValueError, match="cannot tell them apart"):
        OperatingPoints(jpegs)
    with pytest.raises(ValueError, match="learned codec needs its index"):
        OperatingPoints([OperatingPoint("t", "tofc/1", 8)], [])
    with pytest.raises(ValueError, match="unknown codec options"):
        OperatingPoints([OperatingPoint("j", "jpeg/1", options={"speed": 3})])
    with pytest.raises(ValueError, match="1 to 64"):
        OperatingPoints([])


def _with_metadata(data: bytes, edit) -> bytes:
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    edit(header["__metadata__"])
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data[8 + n :]


def test_a_corrupt_bundle_is_refused_with_a_clear_error(codec):
    data = OperatingPoints(_points(), [codec]).to_bytes()
    with pytest.raises(ValueError, match="shorter than 8 bytes"):
        OperatingPoints.from_bytes(b"abc")
    with pytest.raises(ValueError, match="header length"):
        OperatingPoints.from_bytes(struct.pack("<Q", 1 << 40) + data[8:])
    with pytest.raises(ValueError, match="metadata format"):
        OperatingPoints.from_bytes(FIXTURE.read_bytes())  # a codec file, not a bundle

    def wrong_fingerprint(meta):
        codecs = json.loads(meta["codecs"])
        codecs[0]["fingerprint"] = "00" * 16
        meta["codecs"] = json.dumps(codecs)

    with pytest.raises(ValueError, match="does not match the content"):
        OperatingPoints.from_bytes(_with_metadata(data, wrong_fingerprint))

    def unknown_field(meta):
        points = json.loads(meta["points"])
        points[0]["pickle"] = "cos\nsystem"
        meta["points"] = json.dumps(points)

    with pytest.raises(ValueError, match="bad point"):
        OperatingPoints.from_bytes(_with_metadata(data, unknown_field))


def test_tofc_points_measures_priors_through_the_deployed_objects(tiny_model_dir, tiny_codec_path, tmp_path, capsys):
    from tofc_ros.cli import main

    out = tmp_path / "points.safetensors"
    args = ["points", "--model", str(tiny_model_dir), "--codec", str(tiny_codec_path), "--out", str(out)]
    args += ["--point", "name=all,codec=fp16-zstd,level=1", "--point", "name=t8,codec=tofc,n_c=8", "--frames", "1"]
    assert main(args + ["--size", "96x64"]) == 0
    bundle = OperatingPoints.load(out)
    assert [(p.name, p.codec, p.n_c, p.options, p.learned) for p in bundle.points] == [
        ("all", "fp16-zstd/1", 0, {"level": 1}, -1),
        ("t8", "tofc/1", 8, {}, 0),
    ]
    all_tokens, merged = bundle.points
    assert all_tokens.bytes > merged.bytes > 0 and all_tokens.device_ms > 0 and merged.server_ms > 0
    assert main(["points", "--model", "m", "--out", "o", "--point", "name=x,codec=tofc,n_c=eight"]) == 2
    assert "integers" in capsys.readouterr().err
    assert main(["points", "--model", "m", "--out", "o", "--point", "codec=jpeg"]) == 2
    assert "needs name= and codec=" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["scenes-tiny-ov", "easyvqa-tiny-ov"])
def test_the_shipped_bundles_load_and_hold_the_models_own_codec(model):
    """A server with the model's default codec_path decodes the shipped bundle's TOFC points without more."""
    folder = Path(__file__).resolve().parents[1] / "models" / model
    bundle = OperatingPoints.load(folder / "operating_points.safetensors")
    own = load_codec(str(folder / "tofc_codec.safetensors"))
    assert bundle.points[0].codec == "fp16-zstd/1" and bundle.points[0].n_c == 0  # richest first: every token
    assert own.fingerprint in {c.fingerprint for c in bundle.learned_codecs()}
    assert all(p.bytes > 0 and p.device_ms > 0 and p.server_ms > 0 for p in bundle.points)
    assert [p.bytes for p in bundle.points] == sorted((p.bytes for p in bundle.points), reverse=True)
