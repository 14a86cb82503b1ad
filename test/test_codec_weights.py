"""Safetensors weights: round trip, fingerprint, refusal of other weights, no pickle anywhere."""

import ast
import pathlib

import pytest
import torch

from tofc_ros.codec import (
    FingerprintMismatch,
    HyperpriorConfig,
    SelectiveEntropyModel,
    TofcCodec,
    load_codec,
    load_model,
    model_fingerprint,
    save_model,
)
from tofc_ros.codec.weights import model_from_bytes, model_to_bytes

CODEC_DIR = pathlib.Path(__file__).resolve().parents[1] / "tofc_ros" / "codec"


def make(seed, **kw):
    torch.manual_seed(seed)
    model = SelectiveEntropyModel(HyperpriorConfig(d=32, n_e=3, **kw))
    model.update()
    return model


def test_save_load_round_trip(tmp_path):
    model = make(0)
    fp = save_model(model, tmp_path / "m.safetensors")
    loaded = load_model(tmp_path / "m.safetensors")
    assert fp == model.fingerprint_bytes == loaded.fingerprint_bytes == model_fingerprint(loaded)
    assert loaded.cfg == model.cfg
    x = torch.randn(2, 5, 32) * 3
    a, b = TofcCodec(model=model), load_codec(tmp_path / "m.safetensors")
    assert a.encode(x) == b.encode(x)
    assert torch.equal(a.decode(b.encode(x)), b.decode(a.encode(x)))
    # tables were loaded, not rebuilt
    assert torch.equal(
        loaded.experts.gaussian_conditional._quantized_cdf, model.experts.gaussian_conditional._quantized_cdf
    )


def test_fingerprint_depends_on_weights_and_config():
    assert make(0).fingerprint_bytes != make(1).fingerprint_bytes
    assert make(0).fingerprint_bytes != make(0, y_step=0.5).fingerprint_bytes
    assert make(0).fingerprint_bytes == make(0).fingerprint_bytes


def test_decoder_with_other_weights_refuses(tmp_path):
    payload = TofcCodec(model=make(0)).encode(torch.randn(1, 4, 32))
    with pytest.raises(FingerprintMismatch):
        TofcCodec(model=make(1)).decode(payload)


def test_tampered_file_refused():
    data = bytearray(model_to_bytes(make(0)))
    data[-1] ^= 0x01  # last byte of the last tensor
    with pytest.raises(ValueError, match="does not match the content"):
        model_from_bytes(bytes(data))
    with pytest.raises(ValueError, match="not a safetensors file"):
        model_from_bytes(b"\xff" * 16)


def test_save_requires_update(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(ValueError, match=r"Run update\(\) first"):
        save_model(SelectiveEntropyModel(HyperpriorConfig(d=32, n_e=2)), tmp_path / "x.safetensors")


def test_no_pickle_or_torch_load_in_codec():
    for path in CODEC_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(n.split(".")[0] in ("pickle", "dill", "joblib") for n in names), path
            if isinstance(node, ast.Attribute) and node.attr == "load" and isinstance(node.value, ast.Name):
                assert node.value.id != "torch", f"torch.load in {path}"
