#!/usr/bin/env python3
"""Rate–accuracy benchmark on easy-vqa (issue 6): a thin wrapper of ``python -m tofc_ros.eval.rate_accuracy``.

    .venv/bin/python bench/bench_rate_accuracy.py --model models/easyvqa-tiny-ov \
        --tofc models/easyvqa-tiny-ov/tofc_codec.safetensors:16 --tofc runs/easyvqa-tofc-sweep/nc16_step4_lam1e-3 \
        --merge 4,8,16 --limit 1000 --out bench/results/rate_accuracy

Writes results.json, table.md and rate_accuracy.png; see the module docstring for what each point measures.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tofc_ros.eval.rate_accuracy import main

if __name__ == "__main__":
    sys.exit(main())
