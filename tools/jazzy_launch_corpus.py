"""Record what ROS 2 Jazzy's ``ros2 launch`` does with every case of test/launcher_corpus.

Needs a Python that imports Jazzy's ``launch``, ``launch_xml``, ``launch_yaml``, ``launch_ros`` and
``ros2launch`` (their frontends are found through entry points, so installed, not merely on a path) and
an AMENT_PREFIX_PATH holding ``launch``'s share folder (its substitution grammar). On a Jazzy install::

    source /opt/ros/jazzy/setup.bash
    python3 tools/jazzy_launch_corpus.py              # rewrite test/launcher_corpus/expected/*.json
    python3 tools/jazzy_launch_corpus.py --check      # compare only; exit 1 on a difference
    python3 tools/jazzy_launch_corpus.py -k eval      # only the cases whose id contains 'eval'

The tests never need this: they compare the runner with the recorded files.

Each case runs in a fresh interpreter the way ``ros2 launch <file> name:=value ...`` runs it (the
argument parsing and the ``IncludeLaunchDescription`` of ros2launch's ``launch_a_launch_file``), in a
throw-away prefix whose executables are stubs (test/launcher_corpus/corpus.py). An ``OnProcessStart``
handler records every process launch starts: label, command line, the temporary parameter files'
contents, environment, working directory and ``on_exit``. A case whose launch fails records the error
that ``ros2 launch`` printed and its exit status.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "test" / "launcher_corpus"))
import corpus

# The message ros2 launch prints for a failed launch, with its continuation lines (up to the next
# '[LEVEL] [logger]: ...' line).
_CAUGHT = re.compile(r"Caught exception in launch \(see debug for traceback\): (.*(?:\n(?!\[).*)*)")


def _worker(spec_file: str) -> int:
    """Run one case inside this (Jazzy) interpreter; write the result to spec['out']."""
    with open(spec_file, encoding="utf-8") as f:
        spec = json.load(f)
    from launch.actions import IncludeLaunchDescription, RegisterEventHandler, Shutdown
    from launch.event_handlers import OnProcessStart
    from launch.launch_description_sources import AnyLaunchDescriptionSource
    from ros2launch.api.api import parse_launch_arguments

    import launch

    base_env = dict(os.environ)
    marks = corpus.placeholders(Path(spec["prefix"]), Path(spec["cwd"]), Path(spec["home"]))
    temp = tempfile.gettempdir()
    records = []

    def is_inline(path: str) -> bool:  # launch_ros's NamedTemporaryFile(prefix='launch_params_')
        return os.path.dirname(path) == temp and os.path.basename(path).startswith("launch_params_")

    def on_start(event, context):
        on_exit = getattr(event.action, "_ExecuteLocal__on_exit", None)
        shutdown = isinstance(on_exit, list) and any(isinstance(a, Shutdown) for a in on_exit)
        records.append(
            corpus.process_record(
                label=re.sub(r"-\d+$", "", event.process_name),
                cmd=event.cmd,
                env=event.env if event.env is not None else base_env,
                base_env=base_env,
                cwd=event.cwd,
                on_exit="shutdown" if shutdown else None,
                is_inline=is_inline,
                marks=marks,
            )
        )

    try:
        parsed = parse_launch_arguments(list(spec["args"]))
    except RuntimeError as e:  # ros2 launch reports this and exits non-zero before launching
        result = {"error": str(e), "stage": "arguments", "exit_status": 1}
    else:
        service = launch.LaunchService(argv=list(spec["args"]), noninteractive=True)
        service.include_launch_description(
            launch.LaunchDescription(
                [
                    RegisterEventHandler(OnProcessStart(on_start=on_start)),
                    IncludeLaunchDescription(AnyLaunchDescriptionSource(spec["file"]), launch_arguments=parsed),
                ]
            )
        )
        rc = service.run()
        result = {"exit_status": rc, "processes": records}
    with open(spec["out"], "w", encoding="utf-8") as f:
        json.dump(result, f)
    return 0


def _versions(python: str) -> str:
    code = (
        'import importlib.metadata as m; print(", ".join(f"{p} {m.version(p)}" for p in '
        '("launch", "launch_xml", "launch_yaml", "launch_ros", "ros2launch")))'
    )
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def run_case(case: corpus.Case, python: str) -> dict:
    """The Jazzy result of one case (see corpus.write_result for the stored form)."""
    with tempfile.TemporaryDirectory(prefix="jazzy_corpus_") as tmp:
        root = Path(tmp).resolve()
        prefix = corpus.make_prefix(root)
        home, cwd = root / "home", root / "cwd"
        home.mkdir()
        cwd.mkdir()
        inherited = {
            k: os.environ[k] for k in ("PYTHONPATH", "AMENT_PREFIX_PATH", "LD_LIBRARY_PATH") if os.environ.get(k)
        }
        env = corpus.launch_environ(prefix, home, case, inherited)
        spec = {
            "file": str(case.launch_file(prefix)),
            "args": case.args,
            "prefix": str(prefix),
            "cwd": str(cwd),
            "home": str(home),
            "out": str(root / "result.json"),
        }
        (root / "spec.json").write_text(json.dumps(spec))
        proc = subprocess.run(
            [python, str(Path(__file__).resolve()), "--worker", str(root / "spec.json")],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        output = proc.stdout + proc.stderr
        if proc.returncode != 0 or not (root / "result.json").exists():
            raise RuntimeError(f"{case.id}: the Jazzy worker failed:\n{output}")
        result = json.loads((root / "result.json").read_text())
        if result.get("exit_status") and "error" not in result:
            errors = _CAUGHT.findall(output)
            result = {
                "error": errors[0].strip() if errors else output.strip().splitlines()[-1],
                "stage": "launch",
                "exit_status": result["exit_status"],
                "processes_started": len(result.get("processes", [])),
            }
        if "error" in result:  # object addresses in launch's messages change every run
            message = corpus.placehold(result["error"], corpus.placeholders(prefix, cwd, home))
            result["error"] = re.sub(r" at 0x[0-9a-f]+", "", message)
        return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter with Jazzy launch installed (default: this one)"
    )
    parser.add_argument("-k", dest="only", default="", help="only cases whose id contains this")
    parser.add_argument(
        "--check", action="store_true", help="compare with the recorded results instead of rewriting them"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    if ns.worker:
        return _worker(ns.worker)
    versions = _versions(ns.python)
    differences = 0
    for case in corpus.load_cases():
        if ns.only not in case.id:
            continue
        result = run_case(case, ns.python)
        summary = result["error"] if "error" in result else f"{len(result['processes'])} process(es)"
        if ns.check:
            stored = json.loads(case.expected_path.read_text()) if case.expected_path.exists() else {}
            stored = {k: v for k, v in stored.items() if k in result}
            same = stored == result
            differences += not same
            print(f"{'ok  ' if same else 'DIFF'} {case.id}: {summary}")
        else:
            corpus.write_result(case, result, versions)
            print(f"{case.id}: {summary}")
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
