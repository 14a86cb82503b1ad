"""The full-size smoke (bench/full_size_smoke.py): LLaVA-OneVision-0.5B's architecture with random weights, written in
both key layouts, loaded by the deployed and the training loaders, one Algorithm-1 step from LLaVA-format data and one
answer through FeatureEncoder → FrameDecoder → ModelAnswerer. Slow at full size (minutes, several GB; results in
BENCHMARKS.md); the same script at narrow widths runs in the normal suite so it cannot rot."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest


def _smoke(out, scale: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    cmd = [sys.executable, "bench/full_size_smoke.py", "--out", str(out), "--scale", scale]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "smoke.json").read_text())


def _check(res: dict) -> None:
    load = res["load"]
    assert load["same_fingerprint"]
    for layout in ("legacy", "model-prefixed"):
        assert load[layout]["vision_layers"] == 26 and load[layout]["tied_lm_head"]
    assert load["legacy"]["probe"] == load["model-prefixed"]["probe"]
    train = res["train"]
    assert train["image"] == [480, 640] and train["turns"] > 1
    assert all(math.isfinite(train["step"][k]) for k in ("loss", "D", "R", "balance"))
    ans = res["answer"]
    assert ans["tiles"] == 5 and ans["tokens_per_tile"] == 16 and ans["payload_bytes"] > 0
    assert isinstance(ans["answer"], str)
    for phase in ("write", "load", "train", "answer"):
        assert res[phase]["peak_rss_mb"] > 0 and res[phase]["wall_s"] > 0


def test_smoke_script_at_narrow_widths(tmp_path):
    res = _smoke(tmp_path, "tiny")
    _check(res)
    assert not (tmp_path / "legacy").exists()  # the checkpoints are removed unless --keep


@pytest.mark.slow
def test_full_size_smoke(tmp_path):
    res = _smoke(tmp_path, "full")
    _check(res)
    assert res["write"]["parameters"] == 893_618_208
    assert res["train"]["lora_parameters"] > 10_000_000  # rank 64 on every SigLIP and Qwen2 projection
