"""Data parallelism for real: two CPU processes (torchrun, gloo) take the step one process takes on the combined batch.

The run is the command-line tool itself (``tofc train --processes 2``: torch.distributed.run, gloo): each process
trains on its own half of every batch, gradients (and the codec's auxiliary quantile gradients) are all-reduced, only
process 0 writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tofc_ros.train.common import load_config
from tofc_ros.train.pretrain import TinyModelConfig, build_tiny_ov
from tofc_ros.train.tofc import TofcTrainConfig, TofcTrainer

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
STEPS = 3


@pytest.fixture(scope="module")
def config_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    build_tiny_ov(TINY, seed=0).save(root / "model")
    cfg = {
        "model": str(root / "model"),
        "out": str(root / "two"),
        "steps": STEPS,
        "batch_images": 4,  # two images per process per step
        "train_limit": 40,
        "n_c": 4,
        "lam": 1e-2,
        "rate_unit": "element",  # normalised by the coded values of the whole step, counted on every process
        "balance_weight": 1.0,  # the balance loss uses the router usage of the whole step (all-reduced)
        "warmup_steps": 1,
        "lr": 5e-3,
        "codec_lr": 5e-3,
        "aux_lr": 1e-1,
        "threads": 1,
        "log_every": 1,
        "checkpoint_every": 2,
        "save_merged": False,
        "codec": {"n_e": 4},
        "lora": {"r": 2},
    }
    path = root / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_two_processes_equal_one_process_on_the_combined_batch(config_path):
    root = config_path.parent
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.getcwd())
    # tofc train --processes 2: torch.distributed.run --standalone --nproc_per_node 2 -m tofc_ros train ...
    cmd = [sys.executable, "-m", "tofc_ros", "train", "--processes", "2", "--config", str(config_path), "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = root / "two"
    summary = json.loads((two / "summary.json").read_text())
    # Replicas identical: every process's digest of its trainable + codec parameters (quantiles included).
    assert summary["processes"] == 2
    assert summary["replicas"]["identical"] and len(set(summary["replicas"]["digests"])) == 1
    assert len(summary["replicas"]["digests"]) == 2
    # Only process 0 wrote: one log line per step, one printed summary.
    log = [json.loads(line) for line in (two / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, STEPS + 1))
    assert proc.stdout.count('"processes": 2') == 1

    # One process, the combined batch, the same config.
    cfg = load_config(TofcTrainConfig, config_path, [f"out={root / 'one'}"])
    one = TofcTrainer(cfg)
    recs = [one.train_step() for _ in range(STEPS)]
    for r1, r2 in zip(recs, log):
        for key in ("loss", "D", "R", "bits_per_image", "balance", "aux"):
            assert r2[key] == pytest.approx(r1[key], rel=1e-4, abs=1e-6), key
    saved = load_file(str(two / "checkpoint" / "trainable.safetensors"))
    mine = one._trainable_state()
    assert saved.keys() == mine.keys()
    assert any(k.endswith("quantiles") for k in saved)
    for key, value in mine.items():
        torch.testing.assert_close(saved[key], value, rtol=1e-4, atol=2e-5, msg=key)
