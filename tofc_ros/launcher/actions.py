"""What each launch tag does: read a file into actions, run them into a :class:`~.plan.LaunchPlan`.

Two steps, as in ROS 2 Jazzy's launch: a whole file is *read* first (:func:`load_file`: unknown tags
and attributes, substitution syntax, literal parameter values, ``on_exit``...; an error here fails
even inside ``if="false"``), then its actions *run* in order (:class:`Interpreter`), evaluating
substitutions. Semantics follow launch 3.4 / launch_ros 0.26 for the supported tags:

* ``<arg>`` sets a launch configuration to its default unless it is already set; its ``name``,
  ``description`` and ``<choice>`` values are text (backslash escapes only, no substitutions).
* ``<group>`` (scoped by default) restores launch configurations, the environment and the pushed
  ROS namespace (the configuration ``ros_namespace``) when it ends; ``scoped="false"`` does not.
* ``<include>`` is **not** a scope: its ``<arg>`` values and what the included file sets stay set
  after it. Its required arguments (no default, not under a condition) must be given by its own
  ``<arg>``s, even when the configuration is already set. The included file becomes the "current
  launch file" for ``$(dirname)``/``$(filename)`` in its ``<arg>`` values and in everything *after* the
  include too, in the including file as well (launch never restores it).
* ``<node>`` becomes launch_ros's command line::

      <exe> [args] [--ros-args <ros_args>] --ros-args [-r __node:=<name>] [-r __ns:=<ns>]
            [--params-file <file>]... [-r <from>:=<to>]...

  one ``--params-file`` per ``<param>`` in document order; an inline ``<param name= value=>`` goes
  through a temporary params file keyed ``<ns>/<name>`` when both are known, else ``/**``, its value
  typed as :mod:`.params` describes.

Deliberate differences (see docs/launch.md): a ``<param from=>`` file that does not exist is
an error (launch_ros warns and starts the node without it), and ``$(eval)`` evaluates only literals and
operators, never code.
"""

import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from tofc_ros.ament_index import PackageNotFoundError
from tofc_ros.ament_index import find_executable as _find_executable

from . import params
from .entity import Entity
from .errors import LaunchError
from .plan import ArgumentDecl, LaunchPlan, NodeInfo, ProcessSpec
from .substitutions import (
    Context,
    Subst,
    Template,
    Where,
    evaluate_condition,
    parse,
    parse_command_line,
    perform,
    perform_words,
    unescape,
)
from .xml_frontend import parse_xml
from .yaml_frontend import parse_yaml

CONDITIONS = ("if", "unless")
_MAX_INCLUDE_DEPTH = 32
_NODE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAMESPACE = re.compile(r"^(/|(/[A-Za-z_][A-Za-z0-9_]*)+)$")
_OUTPUTS = ("screen", "log", "both", "own_log", "full")
# Process attributes launch has that this runner does not implement.
_PROCESS_LAUNCH_ONLY = (
    "launch-prefix",
    "respawn",
    "respawn_max_retries",
    "respawn_delay",
    "sigkill_timeout",
    "sigterm_timeout",
    "shell",
    "emulate_tty",
)
# Tags launch (or launch_ros) has that this runner does not implement.
_LAUNCH_ONLY_TAGS = (
    "timer",
    "log",
    "shutdown",
    "reset",
    "reset_env",
    "append_env",
    "set_parameter",
    "set_parameters_from_file",
    "set_remap",
    "set_use_sim_time",
    "set_ros_log_dir",
    "node_container",
    "load_composable_node",
    "ros_timer",
)

Words = list[list[str | Subst]]


def parse_launch_file(path: str) -> Entity:
    """Pick the frontend by extension (``.xml``, ``.yaml``/``.yml``), like ros2 launch."""
    lowered = path.lower()
    if lowered.endswith(".py"):
        raise LaunchError(
            "Python launch files are not supported by this runner; use the XML or YAML launch format", path
        )
    if lowered.endswith(".xml"):
        return parse_xml(path)
    if lowered.endswith((".yaml", ".yml")):
        return parse_yaml(path)
    try:
        with open(path, "rb") as f:
            head = f.read(256).lstrip()
    except OSError as e:
        raise LaunchError(f"cannot read launch file: {e.strerror}", path) from None
    return parse_xml(path) if head.startswith(b"<") else parse_yaml(path)


def prefix_namespace(base: str | None, ns: str | None) -> str | None:
    """launch_ros's rule: a relative ``ns`` goes under ``base``; an absolute one replaces it."""
    if base is None and ns is None:
        return None
    if ns is None:
        combined = base
    elif not base or ns.startswith("/"):
        combined = ns
    else:
        combined = ("" if base == "/" else base) + "/" + ns
    if combined != "/":
        combined = combined.rstrip("/")
    return combined


def absolute_namespace(ns: str | None) -> str | None:
    if ns is None or ns.startswith("/"):
        return ns
    return "/" + ns


# -- reading: entities -> actions ------------------------------------------------------------------


@dataclass
class Action:
    """A tag read from a file; ``condition`` is (``unless``?, template) or None."""

    where: Where
    condition: tuple[bool, Template] | None

    def sub_actions(self) -> Sequence["Action"]:
        return ()


@dataclass
class DeclareArg(Action):
    name: str
    default: Template | None
    description: str
    choices: list[str] | None
    default_text: str | None  # as written, for --show-args


@dataclass
class Let(Action):
    name: Template
    value: Template


@dataclass
class SetEnv(Action):
    name: Template
    value: Template


@dataclass
class UnsetEnv(Action):
    name: Template


@dataclass
class PushNamespace(Action):
    namespace: Template


@dataclass
class Group(Action):
    scoped: bool
    actions: list[Action]

    def sub_actions(self) -> Sequence[Action]:
        return self.actions


@dataclass
class Include(Action):
    file: Template
    args: list[tuple[Template, Template]]


@dataclass
class ParamFile:
    where: Where
    path: Template


@dataclass
class ParamDict:
    """One ``<param name=...>`` (nested ones flattened): dotted name templates -> values."""

    where: Where
    values: list[tuple[tuple[Template, ...], params.ParamValue]]


@dataclass
class Process(Action):
    """``<executable>`` (``node`` None) or ``<node>``."""

    cmd: Words
    label: Template | None
    cwd: Template | None
    env: list[tuple[Template, Template]]
    output: Template | None
    on_exit_shutdown: bool
    node: Optional["NodeParts"] = None


@dataclass
class NodeParts:
    package: Template | None
    executable: Template
    name: Template | None
    namespace: Template | None
    args: Words
    ros_args: Words | None
    params: list[ParamFile | ParamDict] = field(default_factory=list)
    remaps: list[tuple[Template, Template]] = field(default_factory=list)


@dataclass
class LaunchFile:
    path: str
    actions: list[Action]


class Reader:
    """Turns one file's entity tree into actions, doing launch's read-time checks."""

    def __init__(self, path: str):
        self.path = path

    def where(self, e: Entity) -> Where:
        return Where(e.file or self.path, e.line)

    def text(self, e: Entity, name: str, required: bool = True) -> str | None:
        """An attribute that must be text: YAML numbers and booleans are refused, as launch does."""
        if name not in e.attrs:
            if required:
                raise e.error(f"missing required attribute '{name}'")
            return None
        raw = e.attrs[name]
        if not isinstance(raw, str):
            shown = "null" if raw is None else f"{type(raw).__name__} {raw!r}"
            raise e.error(f"attribute '{name}' must be text, got YAML {shown}; quote it (ROS 2 launch refuses it too)")
        return raw

    def template(self, e: Entity, name: str, required: bool = True) -> Template | None:
        raw = self.text(e, name, required)
        return None if raw is None else parse(raw, self.where(e))

    def words(self, e: Entity, name: str) -> Words | None:
        raw = self.text(e, name, required=False)
        return None if raw is None else parse_command_line(raw, self.where(e))

    def condition(self, e: Entity) -> tuple[bool, Template] | None:
        if "if" in e.attrs and "unless" in e.attrs:
            raise e.error("'if' and 'unless' cannot both be given")
        for name, negate in (("if", False), ("unless", True)):
            if name in e.attrs:
                return negate, self.template(e, name)
        return None

    def boolean(self, e: Entity, name: str, default: bool) -> bool:
        """A literal boolean attribute (``scoped``): YAML bool, or text read as one."""
        if name not in e.attrs:
            return default
        raw = e.attrs[name]
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str):
            value = params.coerce(raw, params.ValueType(bool), lenient=True)
            if isinstance(value, bool):
                return value
        raise e.error(f"attribute '{name}' must be true or false (no substitutions), got {raw!r}")

    # -- tags --------------------------------------------------------------------------------------
    def actions(self, entities: Sequence[Entity]) -> list[Action]:
        return [self.action(e) for e in entities]

    def action(self, e: Entity) -> Action:
        kind = e.kind
        if kind in ("push_ros_namespace", "push-ros-namespace"):  # launch_ros registers both
            kind = "push_ros_namespace"
        known = ("arg", "let", "set_env", "unset_env", "push_ros_namespace", "group", "include", "node", "executable")
        if kind not in known:
            if kind.replace("-", "_") in known:
                raise e.error(f"not a ROS 2 launch tag (ros2 launch fails on it): write <{kind.replace('-', '_')}>")
            if kind in _LAUNCH_ONLY_TAGS:
                raise e.error(f"not supported by this runner (ROS 2 launch has it); supported: {', '.join(known)}")
            raise e.error(f"unknown action (ROS 2 launch refuses it too); supported: {', '.join(known)}")
        return getattr(self, f"read_{kind}")(e)

    def read_arg(self, e: Entity) -> DeclareArg:
        e.check(("name", "default", "description") + CONDITIONS, ("choice",))
        for c in e.children:
            c.check(("value",), ())
        name = unescape(self.text(e, "name"))
        default = self.template(e, "default", required=False)
        description = self.text(e, "description", required=False)
        choices = [unescape(self.text(c, "value")) for c in e.children] or None
        return DeclareArg(
            self.where(e),
            self.condition(e),
            name,
            default,
            unescape(description) if description is not None else "",
            choices,
            self.text(e, "default", required=False),
        )

    def read_let(self, e: Entity) -> Let:
        e.check(("name", "value") + CONDITIONS)
        return Let(self.where(e), self.condition(e), self.template(e, "name"), self.template(e, "value"))

    def read_set_env(self, e: Entity) -> SetEnv:
        e.check(("name", "value") + CONDITIONS)
        return SetEnv(self.where(e), self.condition(e), self.template(e, "name"), self.template(e, "value"))

    def read_unset_env(self, e: Entity) -> UnsetEnv:
        e.check(("name",) + CONDITIONS)
        return UnsetEnv(self.where(e), self.condition(e), self.template(e, "name"))

    def read_push_ros_namespace(self, e: Entity) -> PushNamespace:
        e.check(("namespace",) + CONDITIONS)
        return PushNamespace(self.where(e), self.condition(e), self.template(e, "namespace"))

    def read_group(self, e: Entity) -> Group:
        e.check(("scoped",) + CONDITIONS, None, launch_only=("forwarding",))
        for c in e.children:
            if c.kind == "keep":
                raise c.error('not supported by this runner (ROS 2 launch has it, with forwarding="false")')
        return Group(self.where(e), self.condition(e), self.boolean(e, "scoped", True), self.actions(e.children))

    def read_include(self, e: Entity) -> Include:
        e.check(("file",) + CONDITIONS, ("arg",))
        for c in e.children:
            c.check(("name", "value"), ())
        args = [(self.template(c, "name"), self.template(c, "value")) for c in e.children]
        return Include(self.where(e), self.condition(e), self.template(e, "file"), args)

    def on_exit(self, e: Entity) -> bool:
        raw = self.text(e, "on_exit", required=False)
        if raw is None:
            return False
        if raw != "shutdown":
            raise e.error(
                f"on_exit='{raw}': only the literal value 'shutdown' is supported "
                "(no substitutions; ROS 2 launch refuses anything else too)"
            )
        return True

    def env_children(self, e: Entity) -> list[tuple[Template, Template]]:
        out = []
        for c in e.children:
            if c.kind == "env":
                c.check(("name", "value"), ())
                out.append((self.template(c, "name"), self.template(c, "value")))
        return out

    def read_executable(self, e: Entity) -> Process:
        if "args" in e.attrs:
            raise e.error(
                "unknown attribute 'args': ROS 2 launch's <executable> has none (it "
                "refuses it): put the arguments in cmd="
            )
        e.check(("cmd", "cwd", "name", "on_exit", "output") + CONDITIONS, ("env",), launch_only=_PROCESS_LAUNCH_ONLY)
        return Process(
            self.where(e),
            self.condition(e),
            self.words_required(e, "cmd"),
            self.template(e, "name", required=False),
            self.template(e, "cwd", required=False),
            self.env_children(e),
            self.template(e, "output", required=False),
            self.on_exit(e),
        )

    def words_required(self, e: Entity, name: str) -> Words:
        self.text(e, name)
        return self.words(e, name)

    def read_node(self, e: Entity) -> Process:
        e.check(
            ("pkg", "exec", "name", "namespace", "args", "ros_args", "exec_name", "output", "on_exit", "cwd")
            + CONDITIONS,
            ("param", "remap", "env"),
            launch_only=_PROCESS_LAUNCH_ONLY + ("node-name",),
        )
        parts = NodeParts(
            self.template(e, "pkg", required=False),
            self.template(e, "exec"),
            self.template(e, "name", required=False),
            self.template(e, "namespace", required=False),
            self.words(e, "args") or [],
            self.words(e, "ros_args"),
        )
        for c in e.children:
            if c.kind == "remap":
                c.check(("from", "to"), ())
                parts.remaps.append((self.template(c, "from"), self.template(c, "to")))
            elif c.kind == "param":
                parts.params.append(self.read_param(c))
        return Process(
            self.where(e),
            self.condition(e),
            [],
            self.template(e, "exec_name", False),
            self.template(e, "cwd", required=False),
            self.env_children(e),
            self.template(e, "output", required=False),
            self.on_exit(e),
            parts,
        )

    def read_param(self, p: Entity) -> ParamFile | ParamDict:
        if "from" in p.attrs:
            if "name" in p.attrs:
                raise p.error("'name' and 'from' cannot both be given")
            p.check(("from",), (), launch_only=("allow_substs",))
            return ParamFile(self.where(p), self.template(p, "from"))
        if "name" not in p.attrs:
            raise p.error("needs name= (with value= or nested <param>s) or from= (a params file)")
        return ParamDict(self.where(p), self.param_entries([p], ()))

    def param_entries(self, entities: Sequence[Entity], prefix: tuple[Template, ...]):
        out = []
        for p in entities:
            allowed = ("name", "value", "type") + (() if p.yaml else ("value-sep",))
            p.check(allowed, ("param",), launch_only=("allow_substs",))
            name = prefix + (self.template(p, "name"),)
            where = self.where(p)
            vtype = params.value_type(self.text(p, "type", required=False), where)
            if "value" in p.attrs and p.children:
                raise p.error("nested <param>s and value= are mutually exclusive")
            if p.children:
                if "type" in p.attrs:
                    raise p.error("nested <param>s and type= are mutually exclusive")
                out += self.param_entries(p.children, name)
            elif "value" in p.attrs:
                raw = p.attrs["value"]
                if not p.yaml:
                    raw = self.text(p, "value")
                    if "value-sep" in p.attrs:
                        raw = params.split_sep(raw, self.text(p, "value-sep"))
                label = ".".join(t.source for t in name)
                out.append((name, params.parse_value(raw, vtype, label, where, xml=not p.yaml)))
            else:
                raise p.error(f"parameter '{self.text(p, 'name')}' needs value= or nested <param>s")
        return out


def load_file(path: str) -> LaunchFile:
    """Read a launch file into actions (launch's read step; nothing is evaluated)."""
    root = parse_launch_file(path)
    return LaunchFile(path, Reader(path).actions(root.children))


# -- running: actions -> plan -------------------------------------------------------------------


class Interpreter:
    """Runs actions against launch's state: configurations, environment, current launch file."""

    def __init__(self, plan: LaunchPlan, environ: dict[str, str]):
        self.plan = plan
        self.configs: dict[str, str] = {}
        self.env: dict[str, str] = dict(environ)
        self.current_file: str | None = None
        self.depth = 0
        self.files: dict[str, LaunchFile] = {}

    def ctx(self, where: Where) -> Context:
        return Context(self.configs, self.env, self.current_file, where)

    def load(self, path: str) -> LaunchFile:
        if path not in self.files:
            self.files[path] = load_file(path)
        return self.files[path]

    def enabled(self, a: Action) -> bool:
        if a.condition is None:
            return True
        negate, template = a.condition
        value = evaluate_condition(perform(template, self.ctx(a.where)), self.ctx(a.where))
        return value != negate

    def run(self, actions: Sequence[Action]) -> None:
        for a in actions:
            if self.enabled(a):
                getattr(self, f"do_{type(a).__name__}")(a)

    # -- actions -----------------------------------------------------------------------------------
    def do_DeclareArg(self, a: DeclareArg) -> None:
        if a.name not in self.configs:
            if a.default is None:
                raise a.where.error(
                    f"<arg>: required launch argument '{a.name}' was not given "
                    f"({a.description or 'no description'}); pass "
                    f"{a.name}:=<value>"
                )
            self.configs[a.name] = perform(a.default, self.ctx(a.where))
        value = self.configs[a.name]
        if a.choices is not None and value not in a.choices:
            raise a.where.error(f"<arg>: launch argument '{a.name}' is '{value}'; must be one of {a.choices}")
        if self.depth == 1 and a.name not in {d.name for d in self.plan.arguments}:
            self.plan.arguments.append(ArgumentDecl(a.name, a.default_text, a.description, a.choices))

    def do_Let(self, a: Let) -> None:
        ctx = self.ctx(a.where)
        self.configs[perform(a.name, ctx)] = perform(a.value, ctx)

    def do_SetEnv(self, a: SetEnv) -> None:
        ctx = self.ctx(a.where)
        self.env[perform(a.name, ctx)] = perform(a.value, ctx)

    def do_UnsetEnv(self, a: UnsetEnv) -> None:
        self.env.pop(perform(a.name, self.ctx(a.where)), None)

    def do_PushNamespace(self, a: PushNamespace) -> None:
        pushed = perform(a.namespace, self.ctx(a.where))
        previous = self.configs.get("ros_namespace")
        ns = absolute_namespace(prefix_namespace(previous, pushed))
        if not _NAMESPACE.match(ns):
            raise a.where.error(
                f"<push_ros_namespace>: invalid namespace '{ns}' (previous "
                f"'{previous}', pushed '{pushed}'): tokens of letters, digits and "
                "'_' separated by '/', not starting with a digit"
            )
        self.configs["ros_namespace"] = ns

    def do_Group(self, a: Group) -> None:
        saved = (dict(self.configs), dict(self.env)) if a.scoped else None
        try:
            self.run(a.actions)
        finally:
            if saved is not None:
                self.configs, self.env = saved

    def do_Include(self, a: Include) -> None:
        path = perform(a.file, self.ctx(a.where))
        if not os.path.isfile(path):
            raise a.where.error(
                f"<include>: file '{path}' does not exist (a relative path is "
                "relative to the working directory, as in ros2 launch; use "
                "$(find-pkg-share pkg)/... or $(dirname)/...)"
            )
        self.include(os.path.abspath(path), a.args, a.where)

    def include(
        self, path: str, args: Sequence[tuple[Template, Template]], where: Where, given: dict[str, str] | None = None
    ) -> None:
        """launch's IncludeLaunchDescription: ``args`` (templates) or ``given`` (command line)."""
        if self.depth >= _MAX_INCLUDE_DEPTH:
            raise where.error(f"<include>: nested deeper than {_MAX_INCLUDE_DEPTH} (a cycle?)")
        launch_file = self.load(path)
        self.current_file = path  # launch's locals: never restored, see the module docstring
        if given is not None:
            names = list(given)
        else:
            names = [perform(n, self.ctx(where)) for n, _ in args]
        self.check_required(launch_file, names, where, top_level=given is not None)
        if given is not None:
            self.configs.update(given)
        for n, v in args:
            ctx = self.ctx(where)
            self.configs[perform(n, ctx)] = perform(v, ctx)
        self.depth += 1
        try:
            self.run(launch_file.actions)
        finally:
            self.depth -= 1

    def check_required(self, launch_file: LaunchFile, names: list[str], where: Where, top_level: bool = False) -> None:
        """launch's check: each required argument of the file (and of includes it has that can be
        read without a context) is among the include's own argument names."""
        # (argument, under a condition, the includes on its path (a list launch shares and keeps
        # appending to), the include that holds it)
        declared: list[tuple[DeclareArg, bool, list[Include] | None, Include | None]] = []
        seen = set()

        def walk(actions, conditional, ilds):
            for a in actions:
                if isinstance(a, DeclareArg):
                    if a.name in seen:
                        continue
                    seen.add(a.name)
                    declared.append((a, conditional or a.condition is not None, ilds, ilds[-1] if ilds else None))
                nested = ilds
                subs: Sequence[Action] = a.sub_actions()
                if isinstance(a, Include):
                    if nested is None:
                        nested = []
                    nested.append(a)  # shared with the caller's list, as in launch
                    subs = self.without_context(a)
                walk(subs, a.condition is not None, nested)

        walk(launch_file.actions, False, None)
        missing: list[tuple[DeclareArg, Include | None]] = []
        for arg, conditional, ilds, holder in declared:
            if conditional or arg.default is not None:
                continue
            for ild in ilds or ():
                names.extend(self.arg_names_without_context(ild))  # cumulative, as in launch
            if arg.name not in names:
                missing.append((arg, holder))
        if not missing:
            return

        def described(arg: DeclareArg) -> str:
            return f"'{arg.name}'" + (f" ({arg.description})" if arg.description else "")

        own = [arg for arg, holder in missing if holder is None]
        if own and top_level:
            usage = " ".join(f"{a.name}:=<value>" for a in own)
            raise where.error(
                f"missing required launch argument(s): {'; '.join(described(a) for a in own)}. Pass {usage}"
            )
        if own:
            raise where.error(
                f"<include>: {os.path.basename(launch_file.path)} needs argument(s) "
                f"{'; '.join(described(a) for a in own)}, and an <include> must "
                "pass them in its own <arg>s (launch does not look at configurations "
                "already set)"
            )
        arg, holder = missing[0]
        raise holder.where.error(
            f"<include>: the included file needs argument {described(arg)} "
            f"(declared at {arg.where.file}:{arg.where.line}); pass it here "
            f'with <arg name="{arg.name}" value="..."/> (launch checks '
            "this before running anything)"
        )

    def empty_ctx(self, where: Where) -> Context:
        return Context({}, self.env, None, where)

    def without_context(self, a: Include) -> Sequence[Action]:
        """launch's look into a nested include before it runs: skipped when it cannot be read."""
        try:
            path = perform(a.file, self.empty_ctx(a.where))
            return self.load(os.path.abspath(path)).actions if os.path.isfile(path) else ()
        except LaunchError:
            return ()

    def arg_names_without_context(self, a: Include) -> list[str]:
        try:
            return [perform(n, self.empty_ctx(a.where)) for n, _ in a.args]
        except LaunchError as e:
            raise a.where.error(
                f"<include>: its <arg> names cannot be evaluated before it runs "
                f"({e.what}); ROS 2 launch fails on this too"
            ) from None

    def do_Process(self, a: Process) -> None:
        ctx = self.ctx(a.where)
        info = None
        if a.node is not None:
            cmd, info = self.node_command(a, ctx)
        else:
            cmd = perform_words(a.cmd, ctx)
        label = perform(a.label, ctx) if a.label is not None else os.path.basename(cmd[0])
        output = perform(a.output, ctx) if a.output is not None else None
        if output is not None and output not in _OUTPUTS:
            raise a.where.error(f"output='{output}' is not one of {', '.join(_OUTPUTS)}")
        env = dict(self.env)
        for name, value in a.env:
            env[perform(name, ctx)] = perform(value, ctx)
        cwd = perform(a.cwd, ctx) if a.cwd is not None else None
        self.plan.processes.append(
            ProcessSpec(
                name=label,
                cmd=cmd,
                env=env,
                cwd=cwd,
                on_exit_shutdown=a.on_exit_shutdown,
                node=info,
                source=f"{a.where.file}:{a.where.line}",
            )
        )

    def node_command(self, a: Process, ctx: Context) -> tuple[list[str], NodeInfo]:
        n = a.node
        name = perform(n.name, ctx) if n.name is not None else None
        if name is not None and not _NODE_NAME.match(name):
            raise a.where.error(
                f"<node>: invalid node name '{name}' (letters, digits and '_', not starting with a digit)"
            )
        ns = perform(n.namespace, ctx) if n.namespace is not None else None
        namespace = absolute_namespace(prefix_namespace(self.configs.get("ros_namespace"), ns))
        if namespace is not None and not _NAMESPACE.match(namespace):
            raise a.where.error(
                f"<node>: invalid namespace '{namespace}' (tokens of letters, "
                "digits and '_' separated by '/', not starting with a digit)"
            )
        package = perform(n.package, ctx) if n.package is not None else None
        executable = perform(n.executable, ctx)
        info = NodeInfo(package or "", executable, name, namespace, [], {}, [])
        key = "/**"
        if name is not None and namespace is not None:
            key = prefix_namespace(namespace, name)
        files = []
        for p in n.params:
            path = self.param_file(p, key, info, ctx)
            info.param_files.append(path)
            files += ["--params-file", path]
        for src, dst in n.remaps:
            pair = (perform(src, ctx), perform(dst, ctx))
            info.remaps.append(pair)
        if package:
            try:
                exe = _find_executable(package, executable, self.env)
            except PackageNotFoundError as err:
                raise a.where.error(f"<node>: {err}") from None
        else:
            exe = executable
        cmd = [exe] + perform_words(n.args, ctx)
        if n.ros_args is not None:
            cmd += ["--ros-args"] + perform_words(n.ros_args, ctx)
        cmd.append("--ros-args")
        if name is not None:
            cmd += ["-r", f"__node:={name}"]
        if namespace is not None:
            cmd += ["-r", f"__ns:={namespace}"]
        cmd += files
        for src, dst in info.remaps:
            cmd += ["-r", f"{src}:={dst}"]
        return cmd, info

    def param_file(self, p: ParamFile | ParamDict, key: str, info: NodeInfo, ctx: Context) -> str:
        """One ``<param>``: a ``from=`` file as written, or an inline value via a temporary file."""
        if isinstance(p, ParamFile):
            path = str(Path(perform(p.path, ctx.at(p.where))))
            if not os.path.isfile(path):
                # launch_ros only warns and drops the file; a missing config is a bug worth stopping for.
                raise p.where.error(
                    f"<param>: parameter file '{path}' does not exist (ROS 2 launch "
                    "would warn and start the node without it)"
                )
            return path
        values: dict[str, Any] = {}
        pctx = ctx.at(p.where)
        for names, value in p.values:
            dotted = ".".join(perform(t, pctx) for t in names)
            values[dotted] = params.evaluate(value, dotted, pctx)
        info.inline_params.update(values)
        if self.plan.temp_dir is None:
            self.plan.temp_dir = tempfile.mkdtemp(prefix="tofc_launch_params_")
        fd, path = tempfile.mkstemp(prefix="launch_params_", suffix=".yaml", dir=self.plan.temp_dir)
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump({key: {"ros__parameters": values}}, f, default_flow_style=False)
        return path


def declared_arguments(path: str) -> list[ArgumentDecl]:
    """The ``<arg>`` tags of one file (inside groups too, conditions ignored), unevaluated."""
    out: list[ArgumentDecl] = []

    def walk(actions: Sequence[Action]) -> None:
        for a in actions:
            if isinstance(a, DeclareArg) and a.name not in {d.name for d in out}:
                out.append(ArgumentDecl(a.name, a.default_text, a.description, a.choices))
            walk(a.sub_actions())

    walk(load_file(os.path.abspath(path)).actions)
    return out


def load_launch_description(
    path: str, launch_args: dict[str, str] | None = None, *, environ: dict[str, str] | None = None
) -> LaunchPlan:
    """Resolve a launch file into a :class:`LaunchPlan` without starting anything.

    Runs the file as ``ros2 launch <path> name:=value ...`` does: an include of ``path`` whose
    arguments are ``launch_args`` (taken as text: no substitutions).

    Args:
        path: an XML or YAML launch file.
        launch_args: ``name -> value`` as given by ``name:=value`` on the command line.
        environ: the environment to resolve ``$(env)``/``find-pkg-share`` against and to give the
            processes; ``os.environ`` by default.

    Raises:
        LaunchError: a bad file, a missing required argument, an unknown substitution, ...
    """
    path = os.path.abspath(path)
    launch_args = {str(k): str(v) for k, v in (launch_args or {}).items()}
    environ = dict(os.environ if environ is None else environ)
    plan = LaunchPlan(launch_file=path)
    interpreter = Interpreter(plan, environ)
    try:
        interpreter.include(path, (), Where(path), given=launch_args)
    except BaseException:
        plan.cleanup()
        raise
    plan.configurations = dict(interpreter.configs)
    return plan
