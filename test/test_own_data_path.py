"""A team's own path, end to end through the tofc tool: convert → train → evaluate on a benchmark file.

LLaVA-format JSON with multi-turn conversations and images of mixed sizes (easy-vqa 64x64: 2 tiles; scenes 640x480:
5 tiles) trains a tiny LLaVA-OneVision for a few Algorithm-1 steps; the trained backbone and codec are then evaluated
on the committed VLMEvalKit TSV through the deployed FeatureEncoder → FrameDecoder → ModelAnswerer, per category.
"""

from __future__ import annotations

import json

import yaml

from tofc_ros.cli import main
from tofc_ros.data.vlmevalkit import load_tsv

TSV = "test/fixtures/bench_mini.tsv"


def test_convert_train_evaluate(tmp_path):
    data = tmp_path / "data"
    assert main(["make-data", "llava", "--from", "easyvqa", "--limit", "24", "--max-turns", "4", "--out", str(data),
                 "--name", "easy", "--no-progress"]) == 0  # fmt: skip
    assert main(["make-data", "llava", "--from", "scenes", "--images", "2", "--size", "640x480", "--max-turns", "3",
                 "--out", str(data), "--name", "scenes", "--no-progress"]) == 0  # fmt: skip
    records = json.loads((data / "easy.json").read_text()) + json.loads((data / "scenes.json").read_text())
    records.sort(key=lambda r: r["id"])  # interleave sources: batches of mixed sizes
    (data / "mixed.json").write_text(json.dumps(records))
    assert any(len(r["conversations"]) > 2 for r in records)

    assert main(["tiny-model", "--kind", "onevision", "--out", str(tmp_path / "base")]) == 0
    config = {
        "model": str(tmp_path / "base"),
        "data": "llava",
        "llava": {"path": str(data / "mixed.json")},
        "out": str(tmp_path / "runs"),
        "name": "own",
        "steps": 3,
        "batch_images": 4,
        "grad_accum": 2,
        "n_c": 8,
        "lam": 1e-3,
        "balance_weight": 1e-3,
        "warmup_steps": 1,
        "threads": 1,
        "log_every": 1,
        "checkpoint_every": 0,
        "codec": {"n_e": 4},
        "lora": {"r": 4, "alpha": 8.0},
        "save_merged": True,
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(tmp_path / "train.yaml"), "--no-progress"]) == 0
    run = tmp_path / "runs" / "own"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 3 and (run / "model" / "config.json").is_file()
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert all(r["R"] > 0 and r["D"] > 0 for r in log)

    out = tmp_path / "eval"
    args = ["eval", "--model", str(run / "model"), "--tofc", str(run), "--merge", "8", "--no-raw", "--jpeg", "50",
            "--webp", "", "--data-file", TSV, "--max-new-tokens", "4", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["metric"] == "generate" and results["questions"] == 73
    categories = {c for it in load_tsv(TSV) for c in it.categories}
    families = {r["family"] for r in results["results"]}
    assert families == {"tofc", "merge-fp16", "jpeg"}
    for r in results["results"]:
        assert set(r["categories"]) == categories
        assert sum(n for _, n in r["categories"].values()) == 73
        assert r["accuracy"] == sum(ok for ok, _ in r["categories"].values()) / 73
        assert r["bytes_per_image"] > 0
    tofc = next(r for r in results["results"] if r["family"] == "tofc")
    assert tofc["n_c"] == 8 and tofc["model"] == str(run / "model")
    predictions = sorted((out / "predictions").iterdir())
    assert len(predictions) == 3
    assert len((predictions[0]).read_text().splitlines()) == 73
    assert "Accuracy per category" in (out / "table.md").read_text()
