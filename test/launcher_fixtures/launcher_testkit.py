"""Helpers for test_launcher_*.py: a throw-away install prefix holding a fake package ``demo``.

The prefix looks like an ament install: the index marker, ``share/demo`` (the launch files and config
next to this module) and ``lib/demo/<exec>`` (the scripts in bin/, with this interpreter as shebang).
"""

import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PACKAGE = 'demo'


def make_prefix(root: Path, package: str = PACKAGE) -> Path:
    prefix = root / 'prefix'
    marker = prefix / 'share' / 'ament_index' / 'resource_index' / 'packages' / package
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text('')
    shutil.copytree(HERE / 'share', prefix / 'share' / package, dirs_exist_ok=True)
    lib = prefix / 'lib' / package
    lib.mkdir(parents=True, exist_ok=True)
    for script in (HERE / 'bin').glob('*.py'):
        target = lib / script.stem
        target.write_text(f'#!{sys.executable}\n' + script.read_text())
        target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return prefix


def environ(prefix: Path, **extra) -> dict:
    env = dict(os.environ)
    env['AMENT_PREFIX_PATH'] = str(prefix)
    env['PYTHONPATH'] = os.pathsep.join([str(REPO)] + [p for p in [env.get('PYTHONPATH')] if p])
    env.update(extra)
    return env


class Runner:
    """``python -m tofc_ros.launcher ...`` in a subprocess, its output collected line by line."""

    def __init__(self, args, env, new_session=False):
        self.lines = []
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'tofc_ros.launcher', *map(str, args)], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=new_session)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip('\n'))
                self.cond.notify_all()

    def wait_for(self, text, count=1, timeout=10.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while sum(text in line for line in self.lines) < count:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None and not self.thread.is_alive():
                    raise AssertionError(f'{text!r} not seen; output:\n' + self.output)
                self.cond.wait(min(left, 0.1))

    def finish(self, timeout=20.0) -> int:
        rc = self.proc.wait(timeout=timeout)
        self.thread.join(timeout=5)
        return rc

    @property
    def output(self) -> str:
        return '\n'.join(self.lines)

    def child_pids(self):
        import re
        return [int(m.group(1)) for m in
                (re.search(r'process started with pid \[(\d+)\]', l) for l in self.lines) if m]


def alive(pid: int) -> bool:
    try:
        with open(f'/proc/{pid}/stat') as f:
            state = f.read().rsplit(')', 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != 'Z'
