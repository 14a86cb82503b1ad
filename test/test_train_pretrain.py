"""Pre-training path: the shared-prefix LM pass equals ServerHalf.logits, the training vision path equals the device
half, the fast pixel path equals the processor, and a few pre-training steps lower the loss and save a loadable
model."""

import json

import numpy as np
import pytest
import torch

from tofc_ros.backbones.answer_scoring import PromptCache, answer_logits, answer_stats
from tofc_ros.data.easyvqa import load_split
from tofc_ros.train.common import PixelPath
from tofc_ros.train.pretrain import (
    MergedStageConfig,
    PretrainConfig,
    TinyModelConfig,
    build_tiny_ov,
    load_data,
    pretrain,
    vision_batch,
)

TINY = TinyModelConfig(
    vision_hidden=32,
    vision_layers=1,
    vision_heads=2,
    vision_mlp=64,
    text_hidden=32,
    text_layers=1,
    text_heads=2,
    text_kv_heads=1,
    text_mlp=64,
)


@pytest.fixture(scope="module")
def model():
    m = build_tiny_ov(TINY, seed=3)
    m.model.eval()
    return m


@torch.no_grad()
def test_pixels_and_vision_match_the_device_half(model):
    items = load_split("test", 12)
    pixels = PixelPath(model.device_half)
    feats = vision_batch(model, pixels, items)
    for item, (f, grid, size) in zip(items, feats):
        ref = model.device_half.encode_image(item.rgb())
        assert (ref.grid, ref.image_size) == (grid, size)
        torch.testing.assert_close(f, ref.features, rtol=1e-4, atol=1e-4)
    assert pixels._fast_ok  # the fast path agreed with the processor


@torch.no_grad()
@pytest.mark.parametrize("n_per_tile", [729, 16])
def test_shared_prefix_logits_equal_one_pass_per_question(model, n_per_tile):
    items = load_split("test", 25)
    server = model.server
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(2, n_per_tile, 32, generator=g) for _ in items]
    embeds = [server.image_embeddings(f, (1, 1), (64, 64)) for f in feats]
    prompts = PromptCache(server)
    scores = answer_logits(server, prompts, embeds, [i.questions for i in items], [i.answers for i in items])
    q = 0
    for item, f in zip(items, feats):
        for question, answer in zip(item.questions, item.answers):
            full = server.logits(f, (1, 1), (64, 64), question, answer)  # [L, V], the serving path
            ids, n_ans = prompts.suffix(question, answer)
            s = ids.numel()
            torch.testing.assert_close(scores.logits[q, :s], full[-s:], rtol=1e-4, atol=1e-5)
            # Targets: the answer tokens + EOS, predicted from the position before each.
            tgt = scores.targets[q]
            assert (tgt != -100).sum() == n_ans
            q += 1
    assert q == scores.logits.shape[0] == 25
    ce, ok = answer_stats(scores)
    assert torch.isfinite(ce) and ok.shape == (25,)


def test_few_steps_lower_the_loss_and_save_a_loadable_model(tmp_path):
    cfg = PretrainConfig(
        model=TINY,
        epochs=8.0,
        train_limit=8,
        batch_images=1,
        lr=5e-3,
        warmup_steps=1,
        log_every=1,
        eval_limit=5,
        threads=1,
    )
    summary = pretrain(cfg, tmp_path, progress=False)
    log = [json.loads(line) for line in (tmp_path / "pretrain_log.jsonl").read_text().splitlines()]
    assert len(log) == 8 and log[-1]["loss"] < log[0]["loss"]
    assert summary["test"]["questions"] == 5
    from tofc_ros.backbones import load_device_half, load_server_half

    dev = load_device_half(tmp_path)
    srv = load_server_half(tmp_path)
    vf = dev.encode_image(load_split("test", 1)[0].rgb())
    assert vf.features.shape == (2, 729, 32)
    assert isinstance(srv.answer(vf.features, vf.grid, vf.image_size, "what shape is in the image?"), str)


def test_vision_pretraining_trains_the_tower_only_and_learns_its_batch():
    from tofc_ros.train.vision_pretrain import VisionPretrainConfig, object_labels, pretrain_vision

    torch.manual_seed(0)
    m = build_tiny_ov(TINY, seed=5)
    items = load_split("train", 150)[:8]
    shape, colour = object_labels(items)
    assert shape.shape == colour.shape == (8,) and int((colour >= 0).sum()) >= 6
    before = {k: v.clone() for k, v in m.model.state_dict().items()}
    cfg = VisionPretrainConfig(
        steps=12, batch_images=8, lr=5e-3, warmup_steps=1, hflip=False, log_every=4, eval_images=8
    )

    class Log(list):
        def write(self, **row):
            self.append(row)

    log = Log()
    summary = pretrain_vision(m, cfg, items, items, seed=0, log=log, progress=False)
    assert [r["step"] for r in log] == [4, 8, 12] and all(r["stage"] == "vision" for r in log)
    assert log[-1]["loss"] < log[0]["loss"]
    assert summary["steps"] == 12 and summary["test"]["colour_images"] == int((colour >= 0).sum())
    after = m.model.state_dict()
    tower = {k for k in after if "vision_tower" in k}
    assert tower and any(not torch.equal(before[k], after[k]) for k in tower)
    assert all(torch.equal(before[k], after[k]) for k in after if k not in tower)  # projector and LM untouched


def test_frozen_tower_from_another_model_and_merged_tokens(tmp_path):
    source = build_tiny_ov(TINY, seed=7)
    source.save(tmp_path / "source")
    cfg = PretrainConfig(
        model=TINY,
        epochs=4.0,
        train_limit=8,
        batch_images=1,
        lr=5e-3,
        warmup_steps=1,
        log_every=1,
        eval_limit=5,
        threads=1,
        vision_from=str(tmp_path / "source"),
        train_vision=False,
        merge="dpc_knn",
        n_c=4,
    )
    summary = pretrain(cfg, tmp_path / "out", progress=False)
    assert summary["test_merged"]["questions"] == 5 and summary["test_merged"]["n_c"] == 4
    from tofc_ros.train.llava import TrainableLlava

    trained = TrainableLlava.from_pretrained(tmp_path / "out")
    fresh = build_tiny_ov(TINY, seed=0)  # what the run started from, before the tower was replaced
    src, out, ini = source.model.state_dict(), trained.model.state_dict(), fresh.model.state_dict()
    tower = [k for k in out if "vision_tower" in k]
    assert tower and all(torch.equal(out[k], src[k]) for k in tower)  # copied, then frozen
    lm = [k for k in out if "language_model" in k]
    assert any(not torch.equal(out[k], ini[k]) for k in lm)  # the LM did train


def test_merged_stage_then_full_tokens_with_counterfactual_questions(tmp_path):
    cfg = PretrainConfig(
        model=TINY,
        epochs=1.0,
        train_limit=24,
        batch_images=2,
        lr=5e-3,
        warmup_steps=1,
        log_every=1,
        eval_limit=5,
        threads=1,
        yes_no_match_rate=0.5,
        merged_stage=MergedStageConfig(epochs=2.0, merge="dpc_knn", n_c=4),
    )
    assert len(load_split("train", 24)) == 3  # 3 images: 2 steps an epoch
    summary = pretrain(cfg, tmp_path, progress=False)
    log = [json.loads(line) for line in (tmp_path / "pretrain_log.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in log] == ["vqa_merged"] * 4 + ["vqa"] * 2
    assert [r["step"] for r in log] == [1, 2, 3, 4, 1, 2]
    assert summary["vqa_merged_steps"] == 4 and summary["steps"] == 2 and summary["train_images_seen"] == 12
    assert summary["config"]["merged_stage"] == {"epochs": 2.0, "merge": "dpc_knn", "n_c": 4}


def test_bad_merge_settings_fail_when_the_config_is_built():
    with pytest.raises(ValueError, match="merge must be one of"):
        PretrainConfig(merge="dpc-knn")
    with pytest.raises(ValueError, match="n_c must be in 1..729"):
        PretrainConfig(merge="uniform", n_c=0)
    assert PretrainConfig(merge="none", n_c=0).n_c == 0  # n_c is unused without merging
    with pytest.raises(ValueError, match="merged_stage.merge"):
        MergedStageConfig(epochs=1.0, merge="none")
    with pytest.raises(ValueError, match="merged_stage.n_c"):
        MergedStageConfig(epochs=1.0, n_c=800)
    with pytest.raises(ValueError, match="match_rate"):
        PretrainConfig(yes_no_match_rate=2.0)


def test_patch_labels_follow_the_objects_into_every_tile():
    from tofc_ros.backbones.spec import BackboneSpec
    from tofc_ros.backbones.tiny import tiny_config
    from tofc_ros.data import scenes
    from tofc_ros.train.vision_pretrain import N_PATCH_CLASSES, patch_labels

    spec = BackboneSpec.from_config(tiny_config("onevision", vocab_size=32))
    for item in scenes.load_split("train", 6):
        labels = patch_labels(spec, item)
        w, h = item.size
        assert labels.shape == (spec.num_tiles(spec.tile_grid((h, w))), 729)
        assert int(labels.min()) >= 0 and int(labels.max()) < N_PATCH_CLASSES
        expected = {1 + scenes.SHAPES.index(o.shape) * 8 + scenes.COLOURS.index(o.color) for o in item.objects}
        assert set(labels[1:].unique().tolist()) - {0} <= expected  # no label but the scene's own objects
        assert set(labels.unique().tolist()) - {0} == expected  # every object labels some patch somewhere
        assert float((labels > 0).float().mean()) < 0.2  # small objects: mostly background


def test_scene_data_runs_every_stage_with_cached_features(tmp_path):
    from tofc_ros.train.pretrain import FeatureCache, SceneDataConfig
    from tofc_ros.train.vision_pretrain import VisionPretrainConfig

    cfg = PretrainConfig(
        data="scenes",
        scenes=SceneDataConfig(train_images=3, test_images=2),
        model=TINY,
        vision_pretrain=VisionPretrainConfig(
            steps=2, batch_images=2, warmup_steps=1, eval_images=2, log_every=1, loader_workers=0
        ),
        merged_stage=MergedStageConfig(epochs=1.0, n_c=4),
        epochs=1.0,
        batch_images=2,
        warmup_steps=1,
        log_every=1,
        threads=1,
        train_vision=False,
    )
    summary = pretrain(cfg, tmp_path, progress=False)
    assert summary["vision_pretrain"]["objective"] == "patch and object labels" and summary["test"]["questions"] > 0
    stages = [json.loads(line)["stage"] for line in (tmp_path / "pretrain_log.jsonl").read_text().splitlines()]
    assert stages == ["vision_patches"] * 2 + ["vqa_merged"] * 2 + ["vqa"] * 2
    model = build_tiny_ov(TINY, seed=0)
    items = load_data(cfg, "train")
    cache = FeatureCache(model, enabled=True)
    first = cache.batch(items[:2], "dpc_knn", 4)
    again = cache.batch(items[:2], "dpc_knn", 4)  # from the cache: the same features, no tower pass
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again)) and len(cache._store) == 2
    with pytest.raises(ValueError, match="balanced by construction"):
        PretrainConfig(data="scenes", yes_no_match_rate=0.5)


def test_zoomed_tiles_centre_each_object_and_label_it_larger():
    from tofc_ros.data import scenes
    from tofc_ros.train.vision_pretrain import _zoomed_tiles, patch_labels

    model = build_tiny_ov(TINY, seed=0)
    item = scenes.load_split("train", 4)[3]
    rng = np.random.default_rng(0)
    base = patch_labels(model.device_half.spec, item)
    grid_patches = {c: int((base[1:] == c).sum()) for c in base[1:].unique().tolist() if c}
    px, labels, cover = _zoomed_tiles(model.device_half, item, 2.0, rng)
    n = min(len(item.objects), 2)
    assert px.shape == (n, 3, 384, 384) and labels.shape == cover.shape == (n, 729)
    for k, obj in enumerate(item.objects[:n]):
        c = 1 + scenes.SHAPES.index(obj.shape) * 8 + scenes.COLOURS.index(obj.color)
        assert int((labels[k] == c).sum()) > 0  # the tile shows its object
        if grid_patches.get(c, 0) >= 4:  # twice the zoom: about four times the patches
            assert int((labels[k] == c).sum()) > 2 * grid_patches[c] / max(1, len(base) - 1)
