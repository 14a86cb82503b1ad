"""``python -m tofc_ros.launcher``: run a ROS 2 XML/YAML launch file where ``ros2 launch`` is absent.

Usage mirrors ``ros2 launch``::

    python -m tofc_ros.launcher tofc_ros both.launch.xml ns:=robot1
    python -m tofc_ros.launcher path/to/file.launch.xml ns:=robot1
    python -m tofc_ros.launcher tofc_ros both.launch.xml --show-args
    python -m tofc_ros.launcher tofc_ros both.launch.xml --print     # command lines only

Exit status: 0 all processes ended cleanly (an interrupted launch whose nodes stop cleanly included),
1 a process failed, 2 a bad launch file or bad arguments.
"""

import argparse
import os
import shlex
import sys

from tofc_ros.ament_index import PackageNotFoundError
from tofc_ros.ament_index import package_share as _package_share

from .actions import declared_arguments, load_launch_description
from .errors import LaunchError
from .process_group import run

EXIT_OK, EXIT_FAILED, EXIT_BAD_LAUNCH = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tofc_ros.launcher",
        description="Run a ROS 2 XML or YAML launch file (the subset tofc_ros uses) without "
        "ros2 launch. Give <package> <file> or <path/to/file>, then name:=value "
        "launch arguments.",
        epilog="Exit status: 0 clean, 1 a process failed, 2 bad launch file or arguments.",
    )
    p.add_argument("targets", nargs="*", metavar="package file | path [name:=value ...]")
    p.add_argument(
        "-s",
        "--show-args",
        "--show-arguments",
        action="store_true",
        help="list the launch file's arguments with defaults and descriptions",
    )
    p.add_argument(
        "-p",
        "--print",
        "--dry-run",
        dest="dry_run",
        action="store_true",
        help="print the resolved command lines and exit without running them",
    )
    p.add_argument(
        "--grace-period",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds to wait after SIGINT before SIGTERM, and after SIGTERM before SIGKILL (default 5)",
    )
    return p


def split_targets(targets: list[str]) -> tuple[list[str], dict[str, str]]:
    """Positional words and ``name:=value`` launch arguments, checked as ``ros2 launch`` does.

    ``name:=`` (an empty value) and ``:=value`` are refused, as by ros2 launch (give the argument an
    empty default instead); the last of repeated names wins.
    """
    words, launch_args = [], {}
    for t in targets:
        if ":=" in t:
            if t.startswith(":=") or (t.count(":=") == 1 and t.endswith(":=")):
                raise LaunchError(
                    f"malformed launch argument '{t}', expected format "
                    "'<name>:=<value>' with a value (ros2 launch refuses an empty "
                    "one too: give the argument an empty default instead)"
                )
            name, value = t.split(":=", 1)
            launch_args[name] = value
        else:
            words.append(t)
    return words, launch_args


def find_launch_file(words: list[str]) -> str:
    """``<path>`` or ``<package> <file name>`` (searched under the package's share folder)."""
    if len(words) == 1:
        if not os.path.isfile(words[0]):
            raise LaunchError(f"launch file '{words[0]}' not found (give <package> <file> or a path to a launch file)")
        return words[0]
    if len(words) != 2:
        raise LaunchError(
            "expected <package> <launch file> or <path/to/launch file>, got "
            f"{len(words)} positional argument(s): {' '.join(words) or 'none'}"
        )
    package, name = words
    try:
        share = _package_share(package, os.environ)
    except PackageNotFoundError as exc:
        raise LaunchError(str(exc)) from None
    matches = []
    for folder, _, files in os.walk(share):
        if name in files:
            matches.append(os.path.join(folder, name))
    if not matches:
        raise LaunchError(f"file '{name}' was not found in the share directory of package '{package}' ({share})")
    if len(matches) > 1:
        raise LaunchError(f"file '{name}' is ambiguous in package '{package}': " + ", ".join(sorted(matches)))
    return matches[0]


def show_args(path: str) -> None:
    args = declared_arguments(path)
    if not args:
        print("No arguments.")
        return
    print("Arguments (pass arguments as '<name>:=<value>'):\n")
    for a in args:
        print(f"    '{a.name}':")
        print(f"        {a.description or 'no description given'}")
        if a.choices:
            print(f"        Valid choices are: {a.choices}")
        print("        (default: " + ("'" + a.default + "'" if a.default is not None else "none, required") + ")\n")


def print_plan(plan) -> None:
    for label, spec in zip(plan.labels(), plan.processes):
        print(f"[{label}] {spec.source}")
        changed = {k: v for k, v in spec.env.items() if os.environ.get(k) != v}
        removed = sorted(k for k in os.environ if k not in spec.env)
        for k in sorted(changed):
            print(f"  env {k}={shlex.quote(changed[k])}")
        for k in removed:
            print(f"  env -u {k}")
        if spec.cwd:
            print(f"  cwd {spec.cwd}")
        if spec.on_exit_shutdown:
            print("  on_exit shutdown")
        print("  " + shlex.join(spec.cmd))
        if plan.temp_dir and spec.node:
            for f in spec.node.param_files:
                if f.startswith(plan.temp_dir + os.sep):
                    with open(f) as h:
                        content = h.read().rstrip().replace("\n", "\n  #   ")
                    print(f"  # {os.path.basename(f)} (temporary):\n  #   {content}")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        ns = parser.parse_intermixed_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2)
        return int(e.code or 0)
    if ns.grace_period < 0:
        print("error: --grace-period must be >= 0", file=sys.stderr)
        return EXIT_BAD_LAUNCH
    try:
        words, launch_args = split_targets(ns.targets)
        path = find_launch_file(words)
        if ns.show_args:
            show_args(path)
            return EXIT_OK
        plan = load_launch_description(path, launch_args)
    except LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_LAUNCH
    if ns.dry_run:
        with plan:
            print_plan(plan)
        return EXIT_OK
    return run(plan, grace_period=ns.grace_period)


if __name__ == "__main__":
    sys.exit(main())
