"""The robot and the server never share a CPU: merging and coding must not depend on the CPU's code path.

Each check runs in separate processes: one on this machine's native path (its widest vector unit, 2 threads) and
one forced onto the portable path (``ATEN_CPU_CAPABILITY=default``: torch's scalar kernels and libm instead of SLEEF
vectors; ``MKL_ENABLE_INSTRUCTIONS=SSE4_2``: MKL's SSE kernels; 1 thread). Those paths give different float32 Gram
products and different ``torch.log`` bits (checked below, so the test shows the paths really differ), yet
  * DPC-KNN picks the same centres and assignment and the same merged bytes (random, clustered and exact-tie
    inputs), and
  * payloads encoded on one path are byte-identical to those encoded on the other, and decode to identical tensors
    on either (the bundled codec, with its trained weights).
Inputs come from numpy's PCG64: torch's own RNG is vectorised differently per path.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
CODEC = REPO / "models" / "easyvqa-tiny-ov" / "tofc_codec.safetensors"
PORTABLE = {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "OMP_NUM_THREADS": "1"}

WORKER = r"""
import hashlib, json, pathlib, sys
import numpy as np
import torch
from tofc_ros.codec import dpc_knn_merge, load_codec

def sha(t):
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()

def merge_inputs():
    rng = np.random.default_rng(7)
    for shape in ((2, 729, 64), (1, 729, 1152), (3, 200, 7), (4, 576, 32)):
        yield f"random{shape}", rng.standard_normal(shape).astype(np.float32) * rng.uniform(0.1, 30.0)
    base = rng.standard_normal((2, 40, 256))
    pick = rng.integers(0, 40, 729)
    yield "clustered", (base[:, pick] * 3 + 0.01 * rng.standard_normal((2, 729, 256))).astype(np.float32)
    grid = rng.integers(-3, 4, (3, 300, 5)).astype(np.float32)  # exact ties in distance, density and score
    yield "ties", grid
    yield "ties_duplicated", np.repeat(grid[:, :60], 5, axis=1)

mode, codec_path, out_dir, in_dir, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
result = {"capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}
probe = torch.from_numpy(np.random.default_rng(1).standard_normal((729, 1152)).astype(np.float32))
result["float32_gram"] = sha(probe @ probe.T)
result["torch_log"] = sha(torch.log(probe.abs().double() + 1e-3))
result["merges"] = {}
for name, x in merge_inputs():
    for n_c in (8, 16):
        res = dpc_knn_merge(torch.from_numpy(x), n_c)
        result["merges"][f"{name}/{n_c}"] = [sha(res.centres), sha(res.assignment), sha(res.merged)]
codec = load_codec(codec_path)
d = codec.model.cfg.d
out = pathlib.Path(out_dir)
out.mkdir(exist_ok=True)
result["encoded"] = {}
rng = np.random.default_rng(11)
for i in range(n):
    tiles = int(rng.integers(1, 11))
    x = rng.standard_normal((tiles, 16, d)) * 10.0 ** rng.uniform(-1, 2)
    payload = codec.encode(torch.from_numpy(x.astype(np.float32)))
    (out / f"{i:04d}.bin").write_bytes(payload)
    result["encoded"][i] = hashlib.sha256(payload).hexdigest()
result["decoded"] = {}
for f in sorted(pathlib.Path(in_dir).glob("*.bin")) if in_dir != "-" else []:
    result["decoded"][f.stem] = sha(codec.decode(f.read_bytes()))
print(json.dumps(result))
"""


def _run(tmp_path, name: str, env_extra: dict, in_dir: str, n: int, worker: str = WORKER, codec=CODEC) -> dict:
    """Run ``worker`` (argv: codec, out dir, in dir, n) in a fresh process on this CPU path; its last JSON line."""
    script = tmp_path / "worker.py"
    script.write_text(worker)
    env = {k: v for k, v in os.environ.items() if k not in PORTABLE and not k.startswith(("MKL_", "ATEN_"))}
    env.update(env_extra, PYTHONPATH=str(REPO))
    res = subprocess.run(
        [sys.executable, str(script), name, str(codec), str(tmp_path / name), in_dir, str(n)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def _check(tmp_path, n: int) -> None:
    native = _run(tmp_path, "native", {}, "-", n)
    portable = _run(tmp_path, "portable", PORTABLE, str(tmp_path / "native"), n)
    back = _run(tmp_path, "native2", {}, str(tmp_path / "portable"), 0)
    assert portable["capability"] == "DEFAULT" and portable["threads"] == 1
    # The two paths really differ where the codec does not rely on them (otherwise this test proves nothing).
    if native["capability"] != "DEFAULT":
        assert native["float32_gram"] != portable["float32_gram"] or native["torch_log"] != portable["torch_log"]
    assert native["merges"] == portable["merges"] == back["merges"]
    assert native["encoded"] == portable["encoded"], "payload bytes depend on the CPU path"
    assert len(portable["decoded"]) == len(back["decoded"]) == n
    for key, decoded in portable["decoded"].items():  # native payloads decoded on the portable path
        assert back["decoded"][key] == decoded, f"payload {key} decodes differently on the two paths"


def test_merge_encode_and_decode_are_identical_across_cpu_code_paths(tmp_path):
    _check(tmp_path, 40)


@pytest.mark.slow
def test_four_hundred_payloads_across_cpu_code_paths(tmp_path):
    _check(tmp_path, 400)
