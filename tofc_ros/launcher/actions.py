"""What each launch tag does: walk an Entity tree and build a :class:`~.plan.LaunchPlan`.

Semantics follow ROS 2 Jazzy's launch / launch_ros for the supported subset:

* ``<arg>`` sets a launch configuration to its default unless it is already set (by the command
  line, an enclosing ``<include>``'s ``<arg>``, or an earlier ``<let>``); no default and not set is
  an error.
* ``<group>`` (scoped by default) restores launch configurations, environment and the pushed ROS
  namespace when it ends; ``scoped="false"`` lets them leak like upstream.
* ``<include>`` is **not** a scope, exactly as in launch: its ``<arg>`` values and anything the
  included file declares or ``<let>``s stay set after it. Wrap it in ``<group>`` to scope it; that
  behaves the same under ``ros2 launch``.
* ``<node>`` becomes launch_ros's command line::

      <exe> [args] [--ros-args <ros_args>] --ros-args [-r __node:=<name>] [-r __ns:=<ns>]
            [--params-file <file>]... [-r <from>:=<to>]...

  one ``--params-file`` per ``<param>`` in document order; an inline ``<param name= value=>``
  goes through a temporary params file keyed ``/<ns>/<name>`` when both are known, else ``/**``.
  Values are typed the launch_ros way: substitute, then ``yaml.safe_load``; lists must be
  non-empty and of one type.
"""

import os
import re
import tempfile
from typing import Any, Dict, List, Optional

import yaml

from . import ament
from .entity import Entity
from .errors import LaunchError
from .plan import ArgumentDecl, LaunchPlan, NodeInfo, ProcessSpec
from .substitutions import Context, evaluate_condition, split_command_line, substitute
from .xml_frontend import parse_xml
from .yaml_frontend import parse_yaml

CONDITIONS = ('if', 'unless')
ACTIONS = ('arg', 'let', 'set_env', 'unset_env', 'push_ros_namespace', 'group', 'include', 'node',
           'executable')
_MAX_INCLUDE_DEPTH = 32
_NODE_NAME = re.compile(r'^[A-Za-z_][A-Za-z0-9_]*$')
_NAMESPACE = re.compile(r'^(/|(/[A-Za-z_][A-Za-z0-9_]*)+)$')


def parse_launch_file(path: str) -> Entity:
    """Pick the frontend by extension (``.xml``, ``.yaml``/``.yml``), like ros2 launch."""
    lowered = path.lower()
    if lowered.endswith('.py'):
        raise LaunchError('Python launch files are not supported by this runner; '
                          'use the XML or YAML launch format', path)
    if lowered.endswith('.xml'):
        return parse_xml(path)
    if lowered.endswith(('.yaml', '.yml')):
        return parse_yaml(path)
    try:
        with open(path, 'rb') as f:
            head = f.read(256).lstrip()
    except OSError as e:
        raise LaunchError(f'cannot read launch file: {e.strerror}', path) from None
    return parse_xml(path) if head.startswith(b'<') else parse_yaml(path)


def prefix_namespace(base: Optional[str], ns: Optional[str]) -> Optional[str]:
    """launch_ros's rule: a relative ``ns`` goes under ``base``; an absolute one replaces it."""
    if base is None and ns is None:
        return None
    if ns is None:
        combined = base
    elif not base or ns.startswith('/'):
        combined = ns
    else:
        combined = ('' if base == '/' else base) + '/' + ns
    if combined != '/':
        combined = combined.rstrip('/')
    return combined if combined.startswith('/') else '/' + combined


class _Scope:
    def __init__(self, configs: Dict[str, str], env: Dict[str, str], namespace: Optional[str]):
        self.configs = configs
        self.env = env
        self.namespace = namespace

    def copy(self) -> '_Scope':
        return _Scope(dict(self.configs), dict(self.env), self.namespace)

    def restore(self, saved: '_Scope') -> None:
        self.configs, self.env, self.namespace = saved.configs, saved.env, saved.namespace


class Interpreter:
    def __init__(self, plan: LaunchPlan, environ: Dict[str, str], launch_args: Dict[str, str]):
        self.plan = plan
        self.scope = _Scope(dict(launch_args), dict(environ), None)
        self.files: List[str] = []
        self.anon_names: Dict[str, str] = {}

    # -- helpers --------------------------------------------------------------------------------
    def ctx(self, e: Entity) -> Context:
        return Context(self.scope.configs, self.scope.env, e.file or self.files[-1],
                       self.anon_names, e.line)

    def text(self, e: Entity, name: str, default: Optional[str] = None,
             required: bool = False) -> Optional[str]:
        """An attribute as a substituted string; YAML scalars are written the way XML spells them."""
        if name not in e.attrs:
            if required:
                raise e.error(f"missing required attribute '{name}'")
            return default
        raw = e.attrs[name]
        if isinstance(raw, bool):
            return 'true' if raw else 'false'
        if isinstance(raw, (int, float)):
            return str(raw)
        if raw is None:
            return ''
        if not isinstance(raw, str):
            raise e.error(f"attribute '{name}' must be a string, got {type(raw).__name__}")
        return substitute(raw, self.ctx(e))

    def words(self, e: Entity, name: str) -> List[str]:
        """A command-line attribute (``args``, ``cmd``): split on literal whitespace only."""
        raw = e.attrs.get(name, '')
        if isinstance(raw, (list, tuple)):
            raise e.error(f"attribute '{name}' must be one string of space-separated words")
        return split_command_line(str(raw if raw is not None else ''), self.ctx(e))

    def literal(self, e: Entity, name: str) -> str:
        """Names of args/configs/env vars: substituted too (launch allows it) and non-empty."""
        value = self.text(e, name, required=True)
        if not value:
            raise e.error(f"attribute '{name}' is empty")
        return value

    def enabled(self, e: Entity) -> bool:
        if 'if' in e.attrs and 'unless' in e.attrs:
            raise e.error("'if' and 'unless' cannot both be given")
        if 'if' in e.attrs:
            return evaluate_condition(self.text(e, 'if'), self.ctx(e))
        if 'unless' in e.attrs:
            return not evaluate_condition(self.text(e, 'unless'), self.ctx(e))
        return True

    def boolean(self, e: Entity, name: str, default: bool) -> bool:
        if name not in e.attrs:
            return default
        return evaluate_condition(self.text(e, name), self.ctx(e))

    # -- files ----------------------------------------------------------------------------------
    def run_file(self, path: str, root: Optional[Entity] = None) -> None:
        if len(self.files) >= _MAX_INCLUDE_DEPTH:
            raise LaunchError(f'includes nested deeper than {_MAX_INCLUDE_DEPTH} (a cycle?)', path)
        root = root if root is not None else parse_launch_file(path)
        root.check((), None)
        self.files.append(path)
        try:
            for child in root.children:
                self.action(child)
        finally:
            self.files.pop()

    def action(self, e: Entity) -> None:
        handler = getattr(self, f'do_{e.kind}', None)
        if e.kind not in ACTIONS or handler is None:
            raise e.error(f"unsupported action (supported: {', '.join(ACTIONS)})")
        handler(e)

    # -- actions --------------------------------------------------------------------------------
    def do_arg(self, e: Entity) -> None:
        e.check(('name', 'default', 'description') + CONDITIONS, ('choice',))
        for c in e.children:
            c.check(('value',))
        if not self.enabled(e):
            return
        name = self.literal(e, 'name')
        description = self.text(e, 'description', '')
        choices = [self.text(c, 'value', required=True) for c in e.children] or None
        if name not in self.scope.configs:
            if 'default' not in e.attrs:
                raise e.error(f"required launch argument '{name}' was not given "
                              f"({description or 'no description'}); pass {name}:=<value>")
            self.scope.configs[name] = self.text(e, 'default')
        value = self.scope.configs[name]
        if choices is not None and value not in choices:
            raise e.error(f"launch argument '{name}' is '{value}'; must be one of {choices}")
        if len(self.files) == 1 and name not in {a.name for a in self.plan.arguments}:
            self.plan.arguments.append(ArgumentDecl(name, e.get('default'), description, choices))

    def do_let(self, e: Entity) -> None:
        e.check(('name', 'value') + CONDITIONS)
        if self.enabled(e):
            self.scope.configs[self.literal(e, 'name')] = self.text(e, 'value', required=True)

    def do_set_env(self, e: Entity) -> None:
        e.check(('name', 'value') + CONDITIONS)
        if self.enabled(e):
            self.scope.env[self.literal(e, 'name')] = self.text(e, 'value', required=True)

    def do_unset_env(self, e: Entity) -> None:
        e.check(('name',) + CONDITIONS)
        if self.enabled(e):
            self.scope.env.pop(self.literal(e, 'name'), None)

    def do_push_ros_namespace(self, e: Entity) -> None:
        e.check(('namespace',) + CONDITIONS)
        if self.enabled(e):
            ns = prefix_namespace(self.scope.namespace, self.text(e, 'namespace', required=True))
            self.scope.namespace = self.valid_namespace(e, ns)

    def do_group(self, e: Entity) -> None:
        e.check(('scoped',) + CONDITIONS, None)
        if not self.enabled(e):
            return
        scoped = self.boolean(e, 'scoped', True)
        saved = self.scope.copy() if scoped else None
        try:
            for child in e.children:
                self.action(child)
        finally:
            if saved is not None:
                self.scope.restore(saved)

    def do_include(self, e: Entity) -> None:
        e.check(('file',) + CONDITIONS, ('arg',))
        for c in e.children:
            c.check(('name', 'value'))
        if not self.enabled(e):
            return
        path = self.text(e, 'file', required=True)
        if not os.path.isabs(path):
            path = os.path.abspath(path)
        if not os.path.isfile(path):
            raise e.error(f"included file '{path}' does not exist (relative paths are relative to "
                          "the working directory, as in ros2 launch; use $(dirname)/... or "
                          "$(find-pkg-share pkg)/...)")
        for c in e.children:
            self.scope.configs[self.literal(c, 'name')] = self.text(c, 'value', required=True)
        self.run_file(path)

    def do_node(self, e: Entity) -> None:
        e.check(('pkg', 'exec', 'name', 'namespace', 'args', 'ros_args', 'exec_name', 'output',
                 'on_exit', 'cwd') + CONDITIONS, ('param', 'remap', 'env'))
        if not self.enabled(e):
            return
        package = self.text(e, 'pkg')
        executable = self.literal(e, 'exec')
        name = self.text(e, 'name')
        if name is not None and not _NODE_NAME.match(name):
            raise e.error(f"invalid node name '{name}' (letters, digits and '_', "
                          "not starting with a digit)")
        namespace = prefix_namespace(self.scope.namespace, self.text(e, 'namespace'))
        if namespace is not None:
            namespace = self.valid_namespace(e, namespace)
        if package:
            try:
                exe = ament.find_executable(package, executable, self.scope.env)
            except LaunchError as err:
                raise e.error(err.what) from None
        else:
            exe = executable
        cmd = [exe] + self.words(e, 'args')
        ros_args = self.words(e, 'ros_args')
        if ros_args:
            cmd += ['--ros-args'] + ros_args
        cmd.append('--ros-args')
        if name is not None:
            cmd += ['-r', f'__node:={name}']
        if namespace is not None:
            cmd += ['-r', f'__ns:={namespace}']
        info = NodeInfo(package or '', executable, name, namespace, [], {}, [])
        params_key = (namespace.rstrip('/') + '/' + name) if (name and namespace) else '/**'
        for p in (c for c in e.children if c.kind == 'param'):
            path = self.param(p, params_key, info)
            info.param_files.append(path)
            cmd += ['--params-file', path]
        for r in (c for c in e.children if c.kind == 'remap'):
            r.check(('from', 'to'))
            pair = (self.text(r, 'from', required=True), self.text(r, 'to', required=True))
            info.remaps.append(pair)
            cmd += ['-r', f'{pair[0]}:={pair[1]}']
        label = self.text(e, 'exec_name') or os.path.basename(exe)
        self.add_process(e, label, cmd, info)

    def do_executable(self, e: Entity) -> None:
        e.check(('cmd', 'name', 'args', 'cwd', 'output', 'on_exit') + CONDITIONS, ('env',))
        if not self.enabled(e):
            return
        e.require('cmd')
        cmd = self.words(e, 'cmd') + self.words(e, 'args')
        if not cmd:
            raise e.error("attribute 'cmd' is empty")
        self.add_process(e, self.text(e, 'name') or os.path.basename(cmd[0]), cmd, None)

    # -- pieces of <node>/<executable> ----------------------------------------------------------
    def add_process(self, e: Entity, label: str, cmd: List[str], info: Optional[NodeInfo]) -> None:
        output = self.text(e, 'output', 'screen')
        if output not in ('screen', 'log', 'both'):
            raise e.error(f"output='{output}' is not one of screen, log, both")
        on_exit = self.text(e, 'on_exit')
        if on_exit not in (None, 'shutdown'):
            raise e.error(f"on_exit='{on_exit}' is not supported (only 'shutdown')")
        env = dict(self.scope.env)
        for c in (c for c in e.children if c.kind == 'env'):
            c.check(('name', 'value'))
            env[self.literal(c, 'name')] = self.text(c, 'value', required=True)
        cwd = self.text(e, 'cwd')
        self.plan.processes.append(ProcessSpec(
            name=label, cmd=cmd, env=env, cwd=cwd or None, on_exit_shutdown=on_exit == 'shutdown',
            node=info, source=f'{e.file}:{e.line}'))

    def param(self, p: Entity, key: str, info: NodeInfo) -> str:
        """One ``<param>``: a ``from=`` file as is, or an inline value via a temporary params file."""
        if 'from' in p.attrs:
            p.check(('from',))
            path = os.path.abspath(self.text(p, 'from'))
            if not os.path.isfile(path):
                # launch_ros only warns and drops the file; a missing config is a bug worth stopping for.
                raise p.error(f"parameter file '{path}' does not exist")
            return path
        values = self.param_tree([p])
        _flatten(values, '', info.inline_params)
        if self.plan.temp_dir is None:
            self.plan.temp_dir = tempfile.mkdtemp(prefix='tofc_launch_params_')
        fd, path = tempfile.mkstemp(prefix='launch_params_', suffix='.yaml',
                                    dir=self.plan.temp_dir)
        with os.fdopen(fd, 'w') as f:
            yaml.safe_dump({key: {'ros__parameters': values}}, f, default_flow_style=False)
        return path

    def param_tree(self, params: List[Entity]) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for p in params:
            p.check(('name', 'value'), ('param',))
            name = self.literal(p, 'name')
            if 'value' in p.attrs and p.children:
                raise p.error('nested <param> and value= are mutually exclusive')
            if p.children:
                out[name] = self.param_tree(p.children)
            elif 'value' in p.attrs:
                out[name] = self.param_value(p, p.attrs['value'])
            else:
                raise p.error(f"parameter '{name}' needs value= (or from= for a file)")
        return out

    def param_value(self, p: Entity, raw: Any) -> Any:
        if isinstance(raw, str):
            text = substitute(raw, self.ctx(p))
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError:
                raise p.error(f"parameter value '{text}' is not valid YAML") from None
            if value is None:
                raise p.error('parameter value is empty')
        elif isinstance(raw, list):
            value = [yaml.safe_load(substitute(v, self.ctx(p))) if isinstance(v, str) else v
                     for v in raw]
        else:
            value = raw
        if type(value) in (bool, int, float, str):
            return value
        if isinstance(value, list):
            if not value or type(value[0]) not in (bool, int, float, str) or any(
                    type(v) is not type(value[0]) for v in value):
                raise p.error(f'parameter list {value!r} must be non-empty with items of one type '
                              '(bool, int, float or str)')
            return value
        raise p.error(f'parameter value {value!r} must be a bool, int, float, str or a list of one '
                      'of those')

    def valid_namespace(self, e: Entity, ns: str) -> str:
        if not _NAMESPACE.match(ns):
            raise e.error(f"invalid namespace '{ns}' (tokens of letters, digits and '_' "
                          "separated by '/', not starting with a digit)")
        return ns


def _flatten(tree: Dict[str, Any], prefix: str, out: Dict[str, Any]) -> None:
    for k, v in tree.items():
        if isinstance(v, dict):
            _flatten(v, f'{prefix}{k}.', out)
        else:
            out[f'{prefix}{k}'] = v


def declared_arguments(path: str) -> List[ArgumentDecl]:
    """The ``<arg>`` tags of one file (inside groups too, conditions ignored), unevaluated."""
    out: List[ArgumentDecl] = []

    def walk(entity: Entity) -> None:
        for c in entity.children:
            if c.kind == 'arg' and 'name' in c.attrs:
                choices = [str(x.get('value')) for x in c.children if x.kind == 'choice'] or None
                default = c.get('default')
                out.append(ArgumentDecl(str(c.attrs['name']),
                                        None if default is None else str(default),
                                        str(c.get('description', '')), choices))
            elif c.kind == 'group':
                walk(c)

    walk(parse_launch_file(path))
    return out


def missing_required(root: Entity, given: Dict[str, str]) -> List[ArgumentDecl]:
    """Unconditional top-level ``<arg>``s without default that were not given: reported all at once."""
    out = []
    for c in root.children:
        if c.kind == 'arg' and 'default' not in c.attrs and 'if' not in c.attrs \
                and 'unless' not in c.attrs and isinstance(c.attrs.get('name'), str) \
                and '$(' not in c.attrs['name'] and c.attrs['name'] not in given:
            out.append(ArgumentDecl(c.attrs['name'], None, str(c.get('description', ''))))
    return out


def load_launch_description(path: str, launch_args: Optional[Dict[str, str]] = None, *,
                            environ: Optional[Dict[str, str]] = None) -> LaunchPlan:
    """Resolve a launch file into a :class:`LaunchPlan` without starting anything.

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
    root = parse_launch_file(path)
    missing = missing_required(root, launch_args)
    if missing:
        listed = '; '.join(f"'{a.name}'" + (f' ({a.description})' if a.description else '')
                           for a in missing)
        usage = ' '.join(f'{a.name}:=<value>' for a in missing)
        raise LaunchError(f'missing required launch argument(s): {listed}. Pass {usage}', path)
    plan = LaunchPlan(launch_file=path)
    interpreter = Interpreter(plan, environ, launch_args)
    try:
        interpreter.run_file(path, root)
    except BaseException:
        plan.cleanup()
        raise
    plan.configurations = dict(interpreter.scope.configs)
    return plan
