"""The launch corpus: small launch files, the cases that run them, and one result format for both launchers.

A *case* is a launch file (a snippet here, or one of the package's own files) plus command-line arguments
(``name:=value`` words, as typed after ``ros2 launch``) and extra environment variables. Its *result* is what
ROS 2 Jazzy's ``ros2 launch`` does with it: the processes it starts, in start order, or an error. Results are
recorded from the real Jazzy frontends by ``tools/jazzy_launch_corpus.py`` into ``expected/<case>.json``;
``test/test_launcher_corpus.py`` resolves the same cases with the package's runner and compares.

Both sides run a case against the same throw-away install prefix (:func:`make_prefix`):

* package ``demo``: this folder as its share directory (so ``$(find-pkg-share demo)/config/...`` resolves)
  and stub executables ``talker`` and ``listener``;
* package ``tofc_ros``: the repository's ``launch/`` and ``config/`` folders and stub executables named like
  its console scripts, so the package's own launch files run as cases too.

A process is compared as plain data (:func:`process_record`)::

    {"label": "talker",                        # ros2 launch's [label-N] without N
     "cmd": ["<prefix>/lib/demo/talker", "--ros-args", "-r", "__node:=a", "--params-file", "<inline:0>"],
     "inline_params": [{"/**": {"ros__parameters": {"x": 1}}}],   # temporary params files, read back
     "env": {"set": {"A": "1"}, "unset": ["B"]},                  # against the launching environment
     "cwd": null, "on_exit": "shutdown"}

Paths are written relative to placeholders (``<prefix>``, ``<cwd>``) so results do not depend on where
the prefix was made.
"""

import json
import os
import re
import shutil
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import yaml

CORPUS = Path(__file__).resolve().parent
REPO = CORPUS.parent.parent
EXPECTED = CORPUS / 'expected'
SNIPPET_PACKAGE = 'demo'
SNIPPET_EXECUTABLES = ('talker', 'listener')
PACKAGE = 'tofc_ros'
PACKAGE_EXECUTABLES = ('device_node', 'server_node', 'uplink_node', 'replay_node', 'demo_client')

# A stub node: it lives a moment (so every process of a case is up before an on_exit="shutdown" one
# ends the launch) and exits 0. Plans are compared, not behaviour.
_STUB = '#!/bin/sh\nsleep 0.5\nexit 0\n'


@dataclass
class Case:
    """One run of a launch file; see cases.yaml for the fields."""

    id: str
    file: str                                  # 'snippet.launch.xml' (here) or 'tofc_ros/<file>'
    args: List[str] = field(default_factory=list)
    env: Dict[str, str] = field(default_factory=dict)
    runner_error: Optional[str] = None         # regex the runner's error must match

    def launch_file(self, prefix: Path) -> Path:
        package, _, name = self.file.partition('/')
        if name and package == PACKAGE:
            return prefix / 'share' / PACKAGE / 'launch' / name
        return prefix / 'share' / SNIPPET_PACKAGE / self.file

    @property
    def expected_path(self) -> Path:
        return EXPECTED / f'{self.id}.json'


def load_cases() -> List[Case]:
    with open(CORPUS / 'cases.yaml', encoding='utf-8') as f:
        raw = yaml.safe_load(f)
    cases = [Case(**{k: v for k, v in entry.items()}) for entry in raw['cases']]
    ids = [c.id for c in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f'cases.yaml: duplicate case ids {duplicates}')
    for c in cases:
        c.args = [str(a) for a in c.args]
        c.env = {str(k): str(v) for k, v in c.env.items()}
    return cases


def make_prefix(root: Path) -> Path:
    """An ament install prefix under ``root`` holding packages ``demo`` and ``tofc_ros`` (see module doc)."""
    prefix = root / 'prefix'
    index = prefix / 'share' / 'ament_index' / 'resource_index' / 'packages'
    index.mkdir(parents=True, exist_ok=True)
    for package, executables in ((SNIPPET_PACKAGE, SNIPPET_EXECUTABLES),
                                 (PACKAGE, PACKAGE_EXECUTABLES)):
        (index / package).write_text('')
        lib = prefix / 'lib' / package
        lib.mkdir(parents=True, exist_ok=True)
        for name in executables:
            exe = lib / name
            exe.write_text(_STUB)
            exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    shutil.copytree(CORPUS, prefix / 'share' / SNIPPET_PACKAGE, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns('expected', '__pycache__', '*.py'))
    for folder in ('launch', 'config'):
        shutil.copytree(REPO / folder, prefix / 'share' / PACKAGE / folder, dirs_exist_ok=True)
    return prefix


def placeholders(prefix: Path, cwd: Path, home: Path) -> Dict[str, str]:
    """Real path -> placeholder, longest first so a path inside another still reads right."""
    pairs = {str(prefix): '<prefix>', str(cwd): '<cwd>', str(home): '<home>'}
    return dict(sorted(pairs.items(), key=lambda kv: -len(kv[0])))


# $(anon name) is name_<host>_<pid>_<random> (dots, dashes and colons made underscores).
_ANON = re.compile(re.escape(re.sub(r'[.:-]', '_', socket.gethostname())) + r'_\d+_\d+')


def placehold(value: Any, marks: Mapping[str, str]) -> Any:
    """``value`` (text, or lists/dicts of it) with placeholders for paths and anonymous names."""
    if isinstance(value, str):
        for real, mark in marks.items():
            value = value.replace(real, mark)
        return _ANON.sub('<anon>', value)
    if isinstance(value, list):
        return [placehold(v, marks) for v in value]
    if isinstance(value, dict):
        return {placehold(k, marks): placehold(v, marks) for k, v in value.items()}
    return value


def process_record(*, label: str, cmd: Sequence[str], env: Mapping[str, str],
                   base_env: Mapping[str, str], cwd: Optional[str], on_exit: Optional[str],
                   is_inline: Callable[[str], bool], marks: Mapping[str, str]) -> Dict[str, Any]:
    """One started process as comparable data (see the module docstring).

    Args:
        label: the process name launch prints, without the ``-N`` counter.
        cmd: the command line as executed.
        env: the environment the process gets; ``base_env`` is the launching environment.
        is_inline: tells a temporary params file (written by the launcher from ``<param name=
            value=>``) from a user's params file; its contents are read back instead of its path.
        marks: :func:`placeholders`.
    """
    words: List[str] = []
    inline: List[Any] = []
    previous = None
    for word in cmd:
        if previous == '--params-file' and is_inline(word):
            with open(word, encoding='utf-8') as f:
                inline.append(placehold(yaml.safe_load(f), marks))
            words.append(f'<inline:{len(inline) - 1}>')
        else:
            words.append(placehold(word, marks))
        previous = word
    changed = {k: placehold(v, marks) for k, v in sorted(env.items()) if base_env.get(k) != v}
    removed = sorted(k for k in base_env if k not in env)
    return {
        'label': placehold(label, marks),
        'cmd': words,
        'inline_params': inline,
        'env': {'set': changed, 'unset': removed},
        'cwd': None if cwd is None else placehold(cwd, marks),
        'on_exit': on_exit,
    }


def write_result(case: Case, result: Dict[str, Any], recorded_with: str) -> None:
    EXPECTED.mkdir(exist_ok=True)
    data = {'case': case.id, 'file': case.file, 'args': case.args, 'env': case.env,
            'recorded_with': recorded_with, **result}
    with open(case.expected_path, 'w', encoding='utf-8') as f:
        f.write(dumps(data) + '\n')


def dumps(value: Any, indent: int = 0) -> str:
    """JSON with one item per line, except lists of plain values (a command line stays one line)."""
    pad = ' ' * (indent + 1)
    if isinstance(value, dict) and value:
        items = [f'{pad}{json.dumps(k)}: {dumps(v, indent + 1)}' for k, v in value.items()]
        return '{\n' + ',\n'.join(items) + '\n' + ' ' * indent + '}'
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        items = [pad + dumps(v, indent + 1) for v in value]
        return '[\n' + ',\n'.join(items) + '\n' + ' ' * indent + ']'
    return json.dumps(value, ensure_ascii=False)


def read_result(case: Case) -> Dict[str, Any]:
    with open(case.expected_path, encoding='utf-8') as f:
        return json.load(f)


def launch_environ(prefix: Path, home: Path, case: Case,
                   inherited: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The environment a case launches in: minimal, deterministic, plus the case's own variables.

    ``inherited`` names what the launcher itself needs to run (the Jazzy tool passes its PYTHONPATH
    and its AMENT_PREFIX_PATH, where launch's own share folder is); the prefix comes first.
    """
    inherited = dict(inherited or {})
    ament = os.pathsep.join([str(prefix)] + [p for p in [inherited.pop('AMENT_PREFIX_PATH', '')] if p])
    env = {'PATH': os.environ.get('PATH', '/usr/bin:/bin'), 'HOME': str(home), 'LANG': 'C.UTF-8',
           'ROS_LOG_DIR': str(home / 'ros_log'), 'AMENT_PREFIX_PATH': ament,
           'TOFC_CORPUS_HOME': str(home)}
    env.update(inherited)
    env.update(case.env)
    return env
