"""AlignedVQ payloads do not depend on the CPU's code path (see test_codec_cross_cpu.py for the two paths).

Encoded on this machine's native path (widest vector unit, 2 threads) and on the portable one
(``ATEN_CPU_CAPABILITY=default``, ``MKL_ENABLE_INSTRUCTIONS=SSE4_2``, 1 thread), PCG64 hidden states give
byte-identical payloads, and every payload decodes to identical tensors on either path: decoding is lookups, adds in
stage order and a separate multiply and add, never a reduction, a BLAS product or a vectorised transcendental.
"""

from __future__ import annotations

import pathlib

from test_codec_cross_cpu import PORTABLE
from test_codec_cross_cpu import _run as run_worker

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURE = REPO / "test" / "fixtures" / "alignedvq_d64_g4r2k16.safetensors"

WORKER = r"""
import hashlib, json, pathlib, sys
import numpy as np
import torch
from tofc_ros.codec import FrameContext, load_codec

codec_path, out_dir, in_dir, n = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])  # argv[1]: the path's name
codec = load_codec(codec_path)
result = {"capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}
out = pathlib.Path(out_dir)
out.mkdir(exist_ok=True)
rng = np.random.default_rng(23)
result["encoded"] = {}
for i in range(n):
    shape = (int(rng.integers(1, 8)), int(rng.integers(1, 730)), 64)
    scale, offset = np.exp(rng.uniform(-1, 2, shape[:2])), rng.uniform(-3, 3, shape[:2])
    x = rng.standard_normal(shape) * scale[..., None] + offset[..., None]
    payload = codec.encode(torch.from_numpy(x.astype(np.float32)), FrameContext(bytes(16), (384, 384), (1, 1), 1))
    (out / f"{i:04d}.bin").write_bytes(payload)
    result["encoded"][i] = hashlib.sha256(payload).hexdigest()
result["decoded"] = {}
for f in sorted(pathlib.Path(in_dir).glob("*.bin")) if in_dir != "-" else []:
    result["decoded"][f.stem] = hashlib.sha256(codec.decode(f.read_bytes()).numpy().tobytes()).hexdigest()
print(json.dumps(result))
"""


def _run(tmp_path, name: str, env_extra: dict, in_dir: str, n: int) -> dict:
    return run_worker(tmp_path, name, env_extra, in_dir, n, worker=WORKER, codec=FIXTURE)


def test_alignedvq_encode_and_decode_are_identical_across_cpu_code_paths(tmp_path):
    native = _run(tmp_path, "native", {}, "-", 30)
    portable = _run(tmp_path, "portable", PORTABLE, str(tmp_path / "native"), 30)
    back = _run(tmp_path, "native2", {}, str(tmp_path / "portable"), 0)
    assert portable["capability"] == "DEFAULT" and portable["threads"] == 1
    assert native["encoded"] == portable["encoded"], "payload bytes depend on the CPU path"
    assert len(portable["decoded"]) == len(back["decoded"]) == 30
    assert back["decoded"] == portable["decoded"], "payloads decode differently on the two paths"
