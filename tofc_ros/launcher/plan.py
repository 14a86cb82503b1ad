"""The resolved result of a launch file: which processes to start, with which command lines.

A plan is plain data, so tests (and ``--print``) can inspect it without starting anything.
Inline ``<param name= value=>`` values are written to temporary ROS params files, as launch_ros
does; the plan owns their folder and :meth:`LaunchPlan.cleanup` (or leaving a ``with`` block, or
:func:`~.process_group.run`) deletes it.
"""

import os
import shutil
from dataclasses import dataclass, field
from typing import Any


@dataclass
class NodeInfo:
    """What a ``<node>`` resolved to, for inspection; the command line in ProcessSpec is what runs."""

    package: str
    executable: str
    name: str | None  # the node name given, None for the node's default
    namespace: str | None  # absolute, None when neither node nor group set one
    param_files: list[str]  # --params-file arguments in order (temporary ones included)
    inline_params: dict[str, Any]  # every inline <param>, merged, for inspection
    remaps: list[tuple[str, str]]

    @property
    def fully_qualified_name(self) -> str | None:
        if self.name is None:
            return None
        return (self.namespace or "").rstrip("/") + "/" + self.name


@dataclass
class ProcessSpec:
    """One process to start. ``name`` is its label in output (``[name-N]``), as in ros2 launch."""

    name: str
    cmd: list[str]
    env: dict[str, str]
    cwd: str | None = None
    on_exit_shutdown: bool = False
    node: NodeInfo | None = None
    source: str = ""  # file:line of the tag, for messages


@dataclass
class ArgumentDecl:
    name: str
    default: str | None
    description: str = ""
    choices: list[str] | None = None


@dataclass
class LaunchPlan:
    launch_file: str
    processes: list[ProcessSpec] = field(default_factory=list)
    arguments: list[ArgumentDecl] = field(default_factory=list)
    configurations: dict[str, str] = field(default_factory=dict)  # final top-level values
    temp_dir: str | None = None

    def labels(self) -> list[str]:
        """``<name>-<n>`` per process, numbered from 1 in start order like ros2 launch."""
        return [f"{p.name}-{i}" for i, p in enumerate(self.processes, start=1)]

    def cleanup(self) -> None:
        if self.temp_dir and os.path.isdir(self.temp_dir):
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        self.temp_dir = None

    def __enter__(self) -> "LaunchPlan":
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()
