"""Rate–accuracy and latency tooling: interpolation at equal accuracy, real payload sizes, the latency arithmetic."""

import math

import pytest

from tofc_ros.data.easyvqa import load_split
from tofc_ros.eval.latency import model_latency
from tofc_ros.eval.rate_accuracy import Point, PointResult, bytes_at_accuracy, evaluate_point
from tofc_ros.train.pretrain import TinyModelConfig, build_tiny_ov


def _r(family, b, a):
    return PointResult(f"{family}{b}", family, b, a, 0, 1, 1, 0, "", "", 0.0, 0.0)


def test_bytes_at_accuracy_interpolates_on_the_envelope():
    res = [_r("jpeg", 100, 0.5), _r("jpeg", 400, 0.9), _r("jpeg", 1600, 0.85), _r("webp", 50, 0.95)]
    assert bytes_at_accuracy(res, "jpeg", 0.5) == 100
    assert bytes_at_accuracy(res, "jpeg", 0.7) == pytest.approx(200.0)  # halfway in log bytes
    assert bytes_at_accuracy(res, "jpeg", 0.9) == pytest.approx(400.0)
    assert bytes_at_accuracy(res, "jpeg", 0.95) is None
    assert bytes_at_accuracy(res, "webp", 0.1) == 50
    assert bytes_at_accuracy(res, "tofc", 0.1) is None


def test_latency_model_adds_transfer_time():
    m = model_latency({"a": {"device_ms": 10.0, "bytes": 125_000, "server_ms": 5.0}}, rates_mbps=(1, 10))
    assert m["1 Mbps"]["a"]["transfer_ms"] == pytest.approx(1000.0)
    assert m["10 Mbps"]["a"]["total_ms"] == pytest.approx(10.0 + 100.0 + 5.0)


def test_points_send_real_payloads(tmp_path):
    tiny = TinyModelConfig(
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
    build_tiny_ov(tiny, seed=0).save(tmp_path)
    items = load_split("test", 6)
    m = str(tmp_path)
    raw = evaluate_point(Point("raw", "fp16", "features", "fp16/1", m), items)
    merged = evaluate_point(Point("m", "merge-fp16", "features", "fp16/1", m, n_c=16), items)
    jpeg = evaluate_point(Point("j", "jpeg", "image", "jpeg/1", m, {"quality": 50}), items)
    overhead = 64 + 4 + 4  # container header, one section length, CRC32
    assert raw.bytes_per_image == 2 * 729 * 32 * 2 + overhead
    assert merged.bytes_per_image == 2 * 16 * 32 * 2 + overhead
    assert 0 < jpeg.bytes_per_image < 64 * 64 * 3
    for r in (raw, merged, jpeg):
        assert r.questions == 6 and 0.0 <= r.accuracy <= 1.0 and math.isfinite(r.server_ms_per_image)


def test_bundled_model_on_the_committed_tsv_and_llava_json(tmp_path):
    """Benchmark files through the deployed path: the bundled easy-vqa model answers the TSV's easy-vqa questions
    (multiple choice by option text, yes/no) through TOFC at n_c = 16, and scores a LLaVA-format conversation file
    the same way by generation and by teacher forcing."""
    from tofc_ros.data import convert
    from tofc_ros.eval.rate_accuracy import load_eval_file

    model = "models/easyvqa-tiny-ov"
    point = Point("tofc", "tofc", "features", f"{model}/tofc_codec.safetensors", model, n_c=16)
    items = load_eval_file("test/fixtures/bench_mini.tsv", prompt_style="question")
    preds: list = []
    r = evaluate_point(point, items, metric="generate", predictions=preds)
    assert r.questions == len(preds) == 73 and r.metric == "generate"
    easy = [v for k, v in r.categories.items() if k.startswith("easyvqa/")]
    assert sum(ok for ok, _ in easy) / sum(n for _, n in easy) >= 0.9, r.categories
    assert {p["kind"] for p in preds} == {"choice", "yesno", "exact"}

    path = convert.to_llava(load_split("test", 30), tmp_path, source="easyvqa", max_turns=3)
    conv = load_eval_file(str(path), limit=20)
    assert sum(len(i.questions) for i in conv) == 20 and all(i.dialogue for i in conv)
    gen = evaluate_point(point, conv, metric="generate")
    forced = evaluate_point(point, conv, metric="teacher-forced")
    assert gen.questions == forced.questions == 20
    assert abs(gen.accuracy - forced.accuracy) <= 0.1  # normalised vs token-exact match of one-word answers
