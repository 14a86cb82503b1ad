"""Loading each half of a llava-hf checkpoint: only its own tensors, every key layout, clear errors, no network."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tofc_ros.backbones import load_device_half, load_server_half, parse_dtype
from tofc_ros.backbones.loading import CheckpointReader, canonical_key, resolve_model_dir
from tofc_ros.backbones.tiny import build_tiny_model, save_tiny_model

QUESTION = "What shape is in the image?"


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_loading")
    for kind in ("onevision", "llava15"):
        save_tiny_model(kind, root / kind, seed=0)
    return root


def _rgb(h=300, w=500):
    return np.random.default_rng(7).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _relayout(src, dst, rename):
    """Copy a checkpoint directory, renaming every tensor key with ``rename``."""
    shutil.copytree(src, dst)
    state = load_file(str(src / "model.safetensors"))
    save_file({rename(k): v for k, v in state.items()}, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def _to_new_layout(key: str) -> str:
    """transformers ≥ 4.52 in-memory layout: model.vision_tower.vision_model.X, model.language_model.X, lm_head."""
    canon = canonical_key(key)
    head, _, rest = canon.partition(".")
    if head == "vision_tower":
        return f"model.vision_tower.vision_model.{rest}"
    if head == "lm_head":
        return canon
    return f"model.{canon}"


def _to_legacy_layout(key: str) -> str:
    """Original llava-hf layout: vision_tower.vision_model.X, language_model.model.X, language_model.lm_head."""
    canon = canonical_key(key)
    head, _, rest = canon.partition(".")
    if head == "vision_tower":
        return f"vision_tower.vision_model.{rest}"
    if head == "language_model":
        return f"language_model.model.{rest}"
    if head == "lm_head":
        return f"language_model.{canon}"
    return canon


def _split_logits(model_dir, rgb, **kwargs):
    device_half = load_device_half(model_dir, **kwargs)
    server_half = load_server_half(model_dir, **kwargs)
    vf = device_half.encode_image(rgb)
    with torch.no_grad():
        return server_half.logits(vf.features, vf.grid, vf.image_size, QUESTION)


@pytest.mark.parametrize("kind", ["onevision", "llava15"])
def test_halves_hold_only_their_modules(kind, tiny_root):
    device_half = load_device_half(tiny_root / kind)
    server_half = load_server_half(tiny_root / kind)
    spec = device_half.spec
    # The robot: vision embeddings + the layers the feature layer needs; no post-layernorm, head or LLM.
    names = [n for n, _ in device_half.vision_tower.named_parameters()]
    assert len(device_half.vision_tower.encoder.layers) == spec.vision_layers_needed
    assert not any(n.startswith(("post_layernorm", "head")) for n in names)
    if kind == "llava15":
        assert spec.vision_layers_needed == spec.vision_layers_total - 1  # layer −2: the last layer is never run
    reader = CheckpointReader(tiny_root / kind)
    vision_keys = [k for k in reader if k.startswith("vision_tower.")]
    loaded = sum(p.numel() for p in device_half.vision_tower.parameters())
    total_vision = sum(reader.get_tensor(k).numel() for k in vision_keys)
    assert loaded < total_vision
    # The server: no vision tower in feature mode.
    assert server_half.vision is None
    lm_params = sum(p.numel() for p in server_half.language_model.parameters())
    lm_ckpt = sum(t.numel() for t in reader.load("language_model.").values()) + sum(
        t.numel() for t in reader.load("lm_head.").values()
    )
    assert lm_params == lm_ckpt
    with pytest.raises(RuntimeError, match="load_vision=True"):
        server_half.encode_image(_rgb())


def test_image_mode_server_matches_device(tiny_root):
    device_half = load_device_half(tiny_root / "onevision")
    server_half = load_server_half(tiny_root / "onevision", load_vision=True)
    rgb = _rgb()
    a, b = device_half.encode_image(rgb), server_half.encode_image(rgb)
    assert torch.equal(a.features, b.features) and a.grid == b.grid and a.image_size == b.image_size


def test_tiles_per_batch_chunks_give_same_features(tiny_root):
    rgb = _rgb(480, 640)
    full = load_device_half(tiny_root / "onevision").encode_image(rgb)
    chunked = load_device_half(tiny_root / "onevision", tiles_per_batch=3).encode_image(rgb)
    torch.testing.assert_close(chunked.features, full.features)


@pytest.mark.parametrize("layout", [_to_new_layout, _to_legacy_layout], ids=["model-prefixed", "legacy"])
@pytest.mark.parametrize("kind", ["onevision", "llava15"])
def test_other_key_layouts_load_identically(kind, layout, tiny_root, tmp_path):
    src = tiny_root / kind
    dst = _relayout(src, tmp_path / "ckpt", layout)
    rgb = _rgb()
    torch.testing.assert_close(_split_logits(dst, rgb), _split_logits(src, rgb), rtol=0, atol=0)


def test_sharded_checkpoint_loads(tmp_path):
    model, tokenizer, processor = build_tiny_model("llava15", seed=0)
    model.save_pretrained(tmp_path / "sharded", max_shard_size="200KB")
    tokenizer.save_pretrained(tmp_path / "sharded")
    processor.save_pretrained(tmp_path / "sharded")
    model.save_pretrained(tmp_path / "single")
    tokenizer.save_pretrained(tmp_path / "single")
    processor.save_pretrained(tmp_path / "single")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    rgb = _rgb()
    torch.testing.assert_close(_split_logits(tmp_path / "sharded", rgb), _split_logits(tmp_path / "single", rgb))


def test_tied_embeddings_without_lm_head(tiny_root, tmp_path):
    """Checkpoints like Qwen2-0.5B store no lm_head: the server ties it to the embedding table."""
    dst = tmp_path / "tied"
    shutil.copytree(tiny_root / "onevision", dst)
    state = load_file(str(dst / "model.safetensors"))
    state = {k: v for k, v in state.items() if canonical_key(k) != "lm_head.weight"}
    save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((dst / "config.json").read_text())
    cfg["text_config"]["tie_word_embeddings"] = True
    (dst / "config.json").write_text(json.dumps(cfg))
    lm = load_server_half(dst).language_model
    assert torch.equal(lm.lm_head.weight, lm.get_input_embeddings().weight)


def test_fingerprint_identifies_the_vision_tower(tiny_root, tmp_path):
    fp_device = load_device_half(tiny_root / "onevision").fingerprint
    fp_server = load_server_half(tiny_root / "onevision").fingerprint
    assert fp_device == fp_server and len(fp_device) == 32
    assert load_device_half(tiny_root / "onevision", dtype="bf16").fingerprint == fp_device  # load dtype: same weights
    other = save_tiny_model("onevision", tmp_path / "seed1", seed=1)
    assert load_device_half(other).fingerprint != fp_device
    assert load_device_half(tiny_root / "llava15").fingerprint != fp_device


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_reduced_precision(dtype, tiny_root):
    rgb = _rgb()
    ref = _split_logits(tiny_root / "onevision", rgb)
    low = _split_logits(tiny_root / "onevision", rgb, dtype=dtype)
    assert low.dtype == parse_dtype(dtype)
    assert torch.isfinite(low).all()
    torch.testing.assert_close(low.float(), ref, rtol=0.1, atol=0.1)


def test_tiny_models_are_deterministic(tmp_path):
    a = save_tiny_model("onevision", tmp_path / "a", seed=3)
    b = save_tiny_model("onevision", tmp_path / "b", seed=3)
    for name in ("model.safetensors", "tokenizer.json", "config.json", "preprocessor_config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_tiny_models_load_with_from_pretrained(tiny_root):
    from transformers import AutoImageProcessor, AutoTokenizer, LlavaOnevisionForConditionalGeneration

    model = LlavaOnevisionForConditionalGeneration.from_pretrained(tiny_root / "onevision")
    tokenizer = AutoTokenizer.from_pretrained(tiny_root / "onevision")
    processor = AutoImageProcessor.from_pretrained(tiny_root / "onevision", backend="pil")
    assert tokenizer.convert_tokens_to_ids("<image>") == model.config.image_token_id
    assert type(processor).__name__ == "LlavaOnevisionImageProcessorPil"
    assert tokenizer.chat_template


def test_backbones_layer_imports_no_ros():
    """House rule 1: the pure layer never imports rclpy or message packages."""
    import subprocess
    import sys

    code = (
        "import sys, tofc_ros.backbones, tofc_ros.backbones.tiny; "
        "bad = [m for m in sys.modules if m.startswith(('rclpy', 'std_msgs', 'sensor_msgs', 'tofc_msgs'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))


def test_missing_path_without_network_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="allow_network=True"):
        resolve_model_dir("llava-hf/llava-onevision-qwen2-0.5b-ov-hf")
    with pytest.raises(FileNotFoundError, match="allow_network"):
        load_device_half(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_server_half(tmp_path / "empty")


def test_unsupported_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="unsupported model_type"):
        load_device_half(tmp_path)


def test_pickled_checkpoint_is_refused(tiny_root, tmp_path):
    dst = tmp_path / "bin"
    shutil.copytree(tiny_root / "llava15", dst)
    (dst / "model.safetensors").unlink()
    (dst / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(FileNotFoundError, match="pickled"):
        load_device_half(dst)


def test_bad_dtype_and_device(tiny_root):
    with pytest.raises(ValueError, match="dtype"):
        load_device_half(tiny_root / "llava15", dtype="int8")
    with pytest.raises(ValueError, match="device"):
        load_device_half(tiny_root / "llava15", device="mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            load_server_half(tiny_root / "llava15", device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (runs on GPU machines; CPU CI skips it)")
def test_cuda_split_matches_cpu(tiny_root):
    rgb = _rgb()
    cpu = _split_logits(tiny_root / "onevision", rgb)
    gpu = _split_logits(tiny_root / "onevision", rgb, device="cuda")
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-3)
    # bf16 on the GPU: the same logits within bf16's resolution, and the same greedy next token where it is clear.
    bf16 = _split_logits(tiny_root / "onevision", rgb, device="cuda", dtype="bf16").float().cpu()
    torch.testing.assert_close(bf16, cpu, rtol=0.05, atol=0.05 * float(cpu.abs().max()))
    top2 = cpu[-1].topk(2).values
    if float(top2[0] - top2[1]) > 0.1 * float(cpu.abs().max()):
        assert int(bf16[-1].argmax()) == int(cpu[-1].argmax())
    # The codec's decoder runs its integer networks on the GPU and must give the CPU's tensor bit for bit.
    from tofc_ros.codec import load_codec

    fixture = Path(__file__).parent / "fixtures" / "codec_d64_e4.safetensors"
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((3, 16, 64)).astype(np.float32) * 4)
    payload = load_codec(fixture).encode(x)
    assert torch.equal(load_codec(fixture, device="cuda").decode(payload), load_codec(fixture).decode(payload))
