"""Process management: the runner started as ``python -m tofc_ros.launcher`` with tiny fixture nodes.

The fixture executables (launcher_fixtures/bin) are copied into a temporary ament prefix as package
``demo``: sleeper (runs until SIGINT, exits 0), crasher (exits 3), quick (exits 0 at once),
stubborn (ignores SIGINT), immortal (ignores SIGINT and SIGTERM).
"""

import io
import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "launcher_fixtures"))
from tofc_ros.launcher import load_launch_description, run
from tofc_ros.launcher.cli import main

import launcher_testkit as kit

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def prefix(tmp_path):
    return kit.make_prefix(tmp_path)


@pytest.fixture
def env(prefix):
    return kit.environ(prefix)


def launch_file(tmp_path, *nodes):
    path = tmp_path / "test.launch.xml"
    path.write_text("<launch>\n" + "\n".join(nodes) + "\n</launch>\n")
    return path


def assert_all_gone(runner):
    pids = runner.child_pids()
    assert pids, runner.output
    assert not [p for p in pids if kit.alive(p)], runner.output


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_to_runner_stops_every_child_cleanly(tmp_path, env, sig):
    path = launch_file(
        tmp_path, '<node pkg="demo" exec="sleeper" name="a" args="one"/>', '<node pkg="demo" exec="sleeper" name="b"/>'
    )
    runner = kit.Runner([path], env)
    runner.wait_for("ready", count=2)
    runner.proc.send_signal(sig)
    assert runner.finish() == 0, runner.output
    out = runner.output
    assert "[sleeper-1] ready one --ros-args -r __node:=a" in out
    assert "[sleeper-1] SIGINT #1" in out and "[sleeper-2] SIGINT #1" in out
    assert out.count("process has finished cleanly") == 2
    assert_all_gone(runner)


def test_terminal_ctrl_c_reaches_each_child_once(tmp_path, env):
    # A terminal sends SIGINT to the whole foreground process group; the children live in their
    # own groups, so only the runner's forwarded SIGINT reaches them.
    path = launch_file(tmp_path, '<node pkg="demo" exec="sleeper" name="a"/>')
    runner = kit.Runner([path], env, new_session=True)
    runner.wait_for("ready")
    os.killpg(runner.proc.pid, signal.SIGINT)
    assert runner.finish() == 0, runner.output
    assert "SIGINT #1" in runner.output and "SIGINT #2" not in runner.output
    assert_all_gone(runner)


def test_a_dying_node_stops_the_others_and_fails(tmp_path, env):
    go = tmp_path / "go"
    path = launch_file(
        tmp_path,
        '<node pkg="demo" exec="sleeper" name="steady"/>',
        '<node pkg="demo" exec="crasher" name="fragile" namespace="robot"/>',
    )
    runner = kit.Runner([path], dict(env, WAIT_FOR=str(go)))
    runner.wait_for("ready")  # the crash comes once the other node is up, not during its start
    go.touch()
    assert runner.finish() == 1, runner.output
    out = runner.output
    assert "[ERROR] [crasher-2]: process has died [pid" in out
    assert "exit code 3]: node '/robot/fragile'" in out
    assert "test.launch.xml:3" in out
    assert "    something went wrong" in out and "    Traceback: imaginary" in out
    assert "[sleeper-1] SIGINT #1" in out and "[INFO] [sleeper-1]: process has finished cleanly" in out
    assert_all_gone(runner)


def test_node_killed_by_a_foreign_signal_is_a_failure(tmp_path, env):
    path = launch_file(tmp_path, '<node pkg="demo" exec="sleeper" name="victim"/>')
    runner = kit.Runner([path], env)
    runner.wait_for("ready")
    os.kill(runner.child_pids()[0], signal.SIGKILL)
    assert runner.finish() == 1, runner.output
    assert "killed by signal SIGKILL" in runner.output


def test_on_exit_shutdown(tmp_path, env):
    go = tmp_path / "go"
    path = launch_file(
        tmp_path,
        '<node pkg="demo" exec="sleeper" name="server"/>',
        f'<node pkg="demo" exec="quick" name="client" on_exit="shutdown"><env name="WAIT_FOR" value="{go}"/></node>',
    )
    runner = kit.Runner([path], env)
    runner.wait_for("ready")
    go.touch()
    assert runner.finish() == 0, runner.output
    assert 'quick-2 exited and has on_exit="shutdown"' in runner.output
    assert "[sleeper-1] SIGINT #1" in runner.output
    assert_all_gone(runner)


def test_all_processes_exiting_zero_ends_the_launch(tmp_path, env):
    path = launch_file(
        tmp_path,
        '<set_env name="TOFC_MODE" value="m1"/>',
        '<node pkg="demo" exec="quick" name="q1"/>',
        '<executable cmd="$(find-pkg-prefix demo)/lib/demo/quick plain" name="raw"/>',
    )
    runner = kit.Runner([path], env)
    assert runner.finish() == 0, runner.output
    assert "[quick-1] quick --ros-args -r __node:=q1 TOFC_MODE=m1" in runner.output
    assert "[raw-2] quick plain TOFC_MODE=m1" in runner.output


def test_escalation_to_sigterm_and_sigkill(tmp_path, env):
    path = launch_file(
        tmp_path,
        '<node pkg="demo" exec="sleeper" name="polite"/>',
        '<node pkg="demo" exec="stubborn" name="deaf"/>',
        '<node pkg="demo" exec="immortal" name="undead"/>',
    )
    runner = kit.Runner([path, "--grace-period", "0.4"], env)
    runner.wait_for("ready", count=3)
    runner.proc.send_signal(signal.SIGINT)
    # the one that needed SIGKILL did not stop cleanly
    assert runner.finish() == 1, runner.output
    out = runner.output
    assert "[INFO] [sleeper-1]: process has finished cleanly" in out
    assert "[WARNING] [stubborn-2]: still running after 0.4 s; sending SIGTERM" in out
    assert "[INFO] [stubborn-2]: process has finished cleanly" in out  # SIGTERM was ours
    assert "[WARNING] [immortal-3]: still running after 0.4 s; sending SIGKILL" in out
    assert "[ERROR] [immortal-3]: did not stop after SIGINT and SIGTERM; killed" in out
    assert_all_gone(runner)


def test_sigterm_alone_is_a_clean_stop_for_a_sigint_deaf_node(tmp_path, env):
    path = launch_file(tmp_path, '<node pkg="demo" exec="stubborn" name="deaf"/>')
    runner = kit.Runner([path, "--grace-period", "0.3"], env)
    runner.wait_for("ready")
    runner.proc.send_signal(signal.SIGTERM)
    assert runner.finish() == 0, runner.output
    assert_all_gone(runner)


def test_run_api_in_process_cleans_up_params(tmp_path, env):
    path = launch_file(tmp_path, '<node pkg="demo" exec="quick" name="q"><param name="x" value="1"/></node>')
    plan = load_launch_description(str(path), {}, environ=env)
    temp_dir = plan.temp_dir
    out = io.StringIO()
    assert run(plan, grace_period=1.0, out=out) == 0
    assert "[quick-1] quick --ros-args -r __node:=q --params-file " + temp_dir in out.getvalue()
    assert not os.path.exists(temp_dir)


def test_cli_package_mode_print_and_show_args(prefix, env, monkeypatch, capsys):
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    assert main(["demo", "full.launch.xml", "--print", "ns:=r9"]) == 0
    printed = capsys.readouterr().out
    assert "[sleeper-1]" in printed and "-r __ns:=/r9" in printed
    assert "rate: 2.5" in printed  # temporary params shown inline
    assert main(["demo", "full.launch.yaml", "--show-args"]) == 0
    shown = capsys.readouterr().out
    assert "'ns':\n        namespace of the robot\n        (default: 'robot1')" in shown


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "nope.launch.xml"], "file 'nope.launch.xml' was not found in the share directory"),
        (["ghost", "x.launch.xml"], "package 'ghost' not found"),
        (["/no/such/file.launch.xml"], "not found"),
        (["demo", "child.launch.xml"], "missing required launch argument(s): 'child_name'"),
        (["demo", "full.launch.xml", ":=x"], "malformed launch argument ':=x'"),
        (["demo", "full.launch.xml", "ns:="], "malformed launch argument 'ns:='"),  # as ros2 launch
        ([], "expected <package> <launch file>"),
    ],
)
def test_cli_errors_exit_2(prefix, monkeypatch, capsys, argv, message):
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(prefix))
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_subprocess_bad_launch_file_exits_2(tmp_path, env):
    path = launch_file(tmp_path, '<node pkg="demo" exec="sleeper" respawn="true"/>')
    runner = kit.Runner([path], env)
    assert runner.finish() == 2
    assert "test.launch.xml:2: <node>: attribute 'respawn' is not supported by this runner" in runner.output
