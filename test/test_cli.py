"""The tofc command-line tool: every subcommand's --help, and bad input ending in one line with exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tofc_ros.cli import COMMANDS, main


def _one_error_line(capsys, name: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"tofc {name}: error: "), err
    return err


def test_overview_and_unknown_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
    assert main([]) == 2
    assert main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_has_help(name, capsys):
    assert main([name, "--help"]) == 0
    out = capsys.readouterr().out
    assert "usage:" in out.lower(), out


def test_console_script_and_module_entry():
    assert '"tofc = tofc_ros.cli:main"' in Path("setup.py").read_text()
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.run(
        [sys.executable, "-m", "tofc_ros", "train", "--config", "/no/such/config.yaml"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == "tofc train: error: No such file or directory: '/no/such/config.yaml'"


def _llava(tmp_path, conversations, image="a.png"):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"id": "x1", "image": image, "conversations": conversations}]))
    return path


def test_train_errors_name_what_and_where(tmp_path, capsys):
    ok_conv = [{"from": "human", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}]
    missing = _llava(tmp_path, ok_conv, image="gone.png")
    assert main(["train", "--set", "data=llava", "--set", f"llava.path={missing}", "--no-progress"]) == 2
    err = _one_error_line(capsys, "train")
    assert f"{missing}: record 0 (id 'x1'): image 'gone.png' not found under {tmp_path}" in err
    no_marker = _llava(tmp_path, [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}])
    assert main(["train", "--set", "data=llava", "--set", f"llava.path={no_marker}"]) == 2
    assert "record 0 (id 'x1'): needs exactly one <image> in the first human turn" in _one_error_line(capsys, "train")
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert main(["train", "--set", f"model={bert}", "--set", "train_limit=5"]) == 2
    assert f"{bert}: unsupported model_type 'bert'" in _one_error_line(capsys, "train")
    assert main(["train", "--set", "lamda=1"]) == 2
    assert "unknown keys ['lamda']" in _one_error_line(capsys, "train")
    assert main(["train", "--processes", "x"]) == 2
    _one_error_line(capsys, "train")
    assert main(["train", "--processes", "2", "--set", f"model={bert}"]) == 2  # checked before any process starts
    assert f"{bert}: unsupported model_type 'bert'" in _one_error_line(capsys, "train")


def test_eval_make_data_and_check_model_errors(tmp_path, capsys):
    assert main(["eval", "--data-file", str(tmp_path / "bench.tsv"), "--no-progress"]) == 2
    assert "TSV benchmark file" in _one_error_line(capsys, "eval")
    assert main(["eval", "--data-file", str(tmp_path / "bench.csv")]) == 2
    assert "must be a VLMEvalKit .tsv" in _one_error_line(capsys, "eval")
    assert main(["check-model", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in _one_error_line(capsys, "check-model")
    assert main(["make-data", "llava", "--from", "scenes", "--size", "640by480", "--out", str(tmp_path)]) == 2
    assert "size must be WxH" in _one_error_line(capsys, "make-data")
    assert main(["bench", "no_such_bench"]) == 2
    assert "no benchmark 'no_such_bench'" in _one_error_line(capsys, "bench")
    assert main(["replay", str(tmp_path / "no.mcap")]) == 2
    assert "bag" in _one_error_line(capsys, "replay")


def test_recordings_become_llava_records(tmp_path, capsys):
    """The bundled sample bag + its questions sidecar (20 easy-vqa test frames, 50 answered questions)."""
    from tofc_ros.data.easyvqa import load_split
    from tofc_ros.data.llava_format import load_llava

    out = tmp_path / "rec"
    assert main(["make-data", "llava", "--bag", "data/easyvqa_sample.mcap", "--out", str(out), "--no-progress"]) == 0
    assert "50 questions in 20 records" in capsys.readouterr().out
    items = load_llava(out / "data.json").items
    assert len(items) == 20 and sum(len(i.questions) for i in items) == 50
    first = load_split("test")[0]
    np.testing.assert_array_equal(items[0].rgb(), first.rgb())  # rgb8 frames decode to the very pixels
    assert items[0].questions == first.questions[: len(items[0].questions)]
    assert main(["make-data", "llava", "--bag", "data/easyvqa_sample.mcap", "--questions", str(tmp_path / "q.jsonl"),
                 "--out", str(out)]) == 2  # fmt: skip
    assert "questions file" in _one_error_line(capsys, "make-data")
    assert main(["make-data", "llava", "--bag", str(tmp_path / "none.mcap"), "--out", str(out)]) == 2
    assert "does not exist" in _one_error_line(capsys, "make-data")
