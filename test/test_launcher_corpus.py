"""The runner against ROS 2 Jazzy's ros2 launch, case by case (test/launcher_corpus).

Each case's expected result was recorded from the real Jazzy frontends by
tools/jazzy_launch_corpus.py; here the runner resolves the same launch file with the same arguments
and environment, in the same kind of install prefix, and must give the same processes (command
lines, temporary parameter files' contents, environment, working directory, on_exit) or fail where
Jazzy fails. A case with ``runner_error`` is one the runner refuses on purpose (documented in
docs/launch.md).
"""

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "launcher_corpus"))
import corpus

from tofc_ros.launcher import LaunchError, load_launch_description
from tofc_ros.launcher.cli import split_targets
from tofc_ros.launcher.substitutions import SUPPORTED

CASES = corpus.load_cases()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus").resolve()
    corpus.make_prefix(root)
    (root / "home").mkdir()
    (root / "cwd").mkdir()
    return root


def run_runner(case: corpus.Case, root: Path):
    """The runner's result for ``case``, in the stored form (corpus.process_record)."""
    prefix, home, cwd = root / "prefix", root / "home", root / "cwd"
    env = corpus.launch_environ(prefix, home, case)
    _, args = split_targets(case.args)
    with load_launch_description(str(case.launch_file(prefix)), args, environ=env) as plan:
        marks = corpus.placeholders(prefix, cwd, home)
        temp = plan.temp_dir
        return [
            corpus.process_record(
                label=p.name,
                cmd=p.cmd,
                env=p.env,
                base_env=env,
                cwd=p.cwd,
                on_exit="shutdown" if p.on_exit_shutdown else None,
                is_inline=lambda path: bool(temp) and path.startswith(temp + "/"),
                marks=marks,
            )
            for p in plan.processes
        ]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_runner_matches_jazzy(case, root, monkeypatch):
    expected = corpus.read_result(case)
    monkeypatch.chdir(root / "cwd")  # relative paths resolve against it, in both launchers
    try:
        got = run_runner(case, root)
    except LaunchError as e:
        assert "error" in expected or case.runner_error, (
            f"the runner refused a case Jazzy runs: {e}\nJazzy started: {expected['processes']}"
        )
        if case.runner_error:
            assert re.search(case.runner_error, str(e)), str(e)
        return
    assert "error" not in expected, f"the runner accepted a case Jazzy refuses ({expected['error']}); it planned {got}"
    assert not case.runner_error, f"the runner should refuse this case ({case.runner_error})"
    assert got == expected["processes"]


def _corpus_text() -> str:
    files = sorted(corpus.CORPUS.rglob("*.launch.*"))
    return "\n".join(f.read_text() for f in files)


def test_corpus_covers_every_supported_construct():
    """Whatever the runner supports has a Jazzy-checked case, so the two cannot drift apart."""
    text = _corpus_text()
    for name in SUPPORTED:
        assert f"$({name} " in text or f"$({name})" in text, f"no case uses $({name})"
    tags = (
        "arg",
        "let",
        "node",
        "executable",
        "group",
        "include",
        "set_env",
        "unset_env",
        "push_ros_namespace",
        "push-ros-namespace",
        "param",
        "remap",
        "env",
        "choice",
    )
    for tag in tags:
        assert f"<{tag} " in text or f"<{tag}>" in text, f"no XML case uses <{tag}>"
    for tag in (
        "arg",
        "let",
        "node",
        "group",
        "include",
        "set_env",
        "unset_env",
        "push_ros_namespace",
        "param",
        "remap",
        "env",
    ):
        assert re.search(rf"(^|\s|-\s|{{){tag}:", text, re.M), f"no YAML case uses {tag}:"
    for attr in (
        "name",
        "namespace",
        "args",
        "ros_args",
        "exec_name",
        "output",
        "on_exit",
        "cwd",
        "if",
        "unless",
        "scoped",
        "from",
        "type",
        "value-sep",
        "description",
        "default",
    ):
        assert f' {attr}="' in text, f"no XML case uses {attr}="


def test_every_case_has_a_recorded_result():
    missing = [c.id for c in CASES if not c.expected_path.exists()]
    assert not missing, f"run tools/jazzy_launch_corpus.py on a Jazzy install for: {missing}"
    stale = sorted({p.stem for p in corpus.EXPECTED.glob("*.json")} - {c.id for c in CASES})
    assert not stale, f"expected/ holds results of cases no longer in cases.yaml: {stale}"
