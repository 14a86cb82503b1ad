"""AlignedVQ trainer: k-means start, codebooks and the layers after the split learn, the robot's layers do not, and
the exported codec + model are what the deployed objects load and answer with."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from test_train_tofc import TINY as TOFC_TINY

from tofc_ros.train.aligned_vq import AlignedVQTrainConfig, AlignedVQTrainer
from tofc_ros.train.common import _from_dict
from tofc_ros.train.pretrain import build_tiny_ov

TINY = dataclasses.replace(TOFC_TINY, vision_layers=2)  # two blocks: one on each side of the split


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_ov_avq")
    build_tiny_ov(TINY, seed=0).save(out)
    return out


def _cfg(tiny_dir, out, **kw):
    base = dict(
        model=str(tiny_dir),
        data="easyvqa",
        out=str(out),
        steps=6,
        batch_images=2,
        train_limit=40,
        split_layer=1,
        groups=2,
        stages=2,
        codebook_size=8,
        init_images=4,
        prior_images=4,
        kmeans_iters=3,
        threads=1,
        log_every=1,
        warmup_steps=1,
        lora={"r": 2, "vision": True, "text": True},
        train_projector=True,
    )
    base.update(kw)
    return _from_dict(AlignedVQTrainConfig, base)


def test_training_moves_codebooks_and_the_layers_after_the_split_only(tiny_dir, tmp_path):
    trainer = AlignedVQTrainer(_cfg(tiny_dir, tmp_path / "run", n_clusters=4))
    names = {n for n, p in trainer.llava.model.named_parameters() if p.requires_grad}
    assert any("encoder.layers.1." in n and "lora_" in n for n in names)
    assert not any("encoder.layers.0." in n for n in names)  # the robot's layer stays the checkpoint's
    assert not any("embeddings" in n for n in names)
    before = {n: p.detach().clone() for n, p in trainer.llava.model.named_parameters() if "encoder.layers.0." in n}
    summary = trainer.run(progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 7))
    assert all(torch.isfinite(torch.tensor([r["loss"], r["D"], r["vq"]])).all() for r in log)
    for n, p in trainer.llava.model.named_parameters():
        if n in before:
            assert torch.equal(p, before[n]), n
    files = summary["files"]
    assert set(files) == {"model", "codec"}

    # The exported pair is what the nodes load: the device cut after layer 1 merging to 4, the server's tail.
    import numpy as np

    from tofc_ros.backbones import load_device_half, load_server_half
    from tofc_ros.codec import load_codec
    from tofc_ros.pipeline.answerer import model_server
    from tofc_ros.pipeline.encoder import FeatureEncoder

    codec = load_codec(files["codec"])
    assert codec.split_layer == 1 and codec.n_clusters == 4
    assert codec.fingerprint.hex() == summary["codec_fingerprint"]
    device = load_device_half(files["model"], split_layer=1)
    server = load_server_half(files["model"], vision_splits=[1])
    decoder, answerer = model_server(server, [codec], accept_images=False)
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    frame = decoder.decode(FeatureEncoder(device, codec, codec.n_clusters).encode(rgb).payload)
    assert frame.features.shape == (2, 4, 32)
    assert isinstance(answerer.answer(frame, "What shape is in the image?"), str)


def test_codebooks_only_keeps_the_model_and_writes_no_model(tiny_dir, tmp_path):
    cfg = _cfg(tiny_dir, tmp_path / "run", lora={"vision": False, "text": False}, train_projector=False, steps=2)
    trainer = AlignedVQTrainer(cfg)
    assert [p for p in trainer.llava.parameters() if p.requires_grad] == []
    init = None

    def grab(*_):
        nonlocal init
        init = trainer.vq.codebooks.detach().clone()

    trainer.vq.register_forward_pre_hook(grab)
    summary = trainer.run(progress=False)
    assert set(summary["files"]) == {"codec"}
    assert init is not None and not torch.equal(trainer.vq.codebooks.detach(), init)  # the task loss moved them


def test_bad_settings_are_refused(tiny_dir, tmp_path):
    with pytest.raises(ValueError, match="feature layer"):
        AlignedVQTrainer(_cfg(tiny_dir, tmp_path, split_layer=2))
    with pytest.raises(ValueError, match="outside"):
        AlignedVQTrainer(_cfg(tiny_dir, tmp_path, split_layer=3))
    with pytest.raises(ValueError, match="data"):
        _cfg(tiny_dir, tmp_path, data="coco")


def test_llava15_trains_with_its_cls_token_kept_through_the_split(tiny_dirs, tmp_path):
    """CLIP (LLaVA-1.5): the CLS token crosses the split unmerged in training as in serving, and the exported pair
    answers through the deployed objects."""
    import numpy as np

    from tofc_ros.backbones import load_device_half, load_server_half
    from tofc_ros.codec import load_codec
    from tofc_ros.pipeline.answerer import model_server
    from tofc_ros.pipeline.encoder import FeatureEncoder

    cfg = _cfg(tiny_dirs["llava15"], tmp_path / "run", n_clusters=6, steps=2, lora={"r": 2, "vision": True})
    trainer = AlignedVQTrainer(cfg)
    h, _, _, _ = trainer.split_features(trainer.train[:1])[0]
    assert h.shape[1] == 1 + 6  # CLS + merged tokens, as FeatureEncoder sends them
    files = trainer.run(progress=False)["files"]
    codec = load_codec(files["codec"])
    device = load_device_half(files["model"], split_layer=1)
    decoder, answerer = model_server(load_server_half(files["model"], vision_splits=[1]), [codec], accept_images=False)
    rgb = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    frame = decoder.decode(FeatureEncoder(device, codec, codec.n_clusters).encode(rgb).payload)
    assert frame.features.shape[1] == 7
    assert isinstance(answerer.answer(frame, "What shape is in the image?"), str)
