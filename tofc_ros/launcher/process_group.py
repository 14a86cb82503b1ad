"""Start a plan's processes, prefix their output, and stop them all cleanly.

Behaviour (see also the package README / cli help):

* Every child gets its own process group (``process_group=0``): a Ctrl-C in a terminal reaches only
  the runner (the foreground group), which then sends SIGINT to each child's group exactly once.
  Without this a child would get SIGINT twice (from the terminal and from the runner), which makes
  rclpy nodes skip their clean shutdown. Signals go to the child's whole group, so helper processes a
  node started go down with it.
* Shutdown: SIGINT to every running child, wait ``grace_period`` s, SIGTERM to those left, wait
  again, then SIGKILL. A second SIGINT/SIGTERM to the runner skips to the next step.
* Output: stdout and stderr of each child are merged and printed line by line as
  ``[<name>-<n>] <line>``; ``PYTHONUNBUFFERED=1`` is set (unless given) so Python nodes' prints are not
  held back in a pipe buffer.
* Exit status of :func:`run`: 0 when every process ended cleanly -- exit 0, or ended by the
  SIGINT/SIGTERM the runner sent while shutting down (after a node's ``on_exit="shutdown"``, or after
  the runner itself got SIGINT/SIGTERM). 1 when a process exited non-zero, died from a signal the
  runner did not send, could not be started, or had to be SIGKILLed. An interrupted launch whose
  children all stop cleanly is therefore a success (0), not 130/143.
"""

import collections
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import IO

from .plan import LaunchPlan, ProcessSpec

TAIL_LINES = 10
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Child:
    def __init__(self, spec: ProcessSpec, label: str):
        self.spec = spec
        self.label = label
        self.proc: subprocess.Popen | None = None
        self.tail = collections.deque(maxlen=TAIL_LINES)
        self.reader: threading.Thread | None = None
        self.sent: list[int] = []  # signals the runner sent
        self.done = False

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode


class ProcessGroup:
    def __init__(self, plan: LaunchPlan, grace_period: float = 5.0, out: IO[str] | None = None):
        self.children = [_Child(spec, label) for spec, label in zip(plan.processes, plan.labels())]
        self.grace_period = grace_period
        self.out = out if out is not None else sys.stdout
        self.lock = threading.Lock()
        self.events: queue.Queue[_Child] = queue.Queue()
        self.failed = False
        self.shutting_down = False
        self.stage = -1  # index into _ESCALATION once shutting down
        self.stage_started = 0.0
        self.signals_received: list[int] = []

    # -- output ---------------------------------------------------------------------------------
    def log(self, level: str, who: str, message: str) -> None:
        self.write(f"[{level}] [{who}]: {message}")

    def write(self, line: str) -> None:
        with self.lock:
            try:
                self.out.write(line + "\n")
                self.out.flush()
            except (OSError, ValueError):
                pass  # a closed terminal must not take the shutdown logic down with it

    def _read(self, child: _Child) -> None:
        for raw in iter(child.proc.stdout.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            child.tail.append(line)
            self.write(f"[{child.label}] {line}")
        child.proc.stdout.close()

    def _wait(self, child: _Child) -> None:
        child.proc.wait()
        self.events.put(child)

    # -- signals --------------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        # Only record it: the main loop polls, so no locks are taken inside the handler.
        self.signals_received.append(signum)

    def _send(self, child: _Child, sig: int) -> None:
        if child.proc is None or child.proc.returncode is not None or child.done:
            return
        child.sent.append(sig)
        try:
            os.killpg(child.proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            child.proc.send_signal(sig)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> bool:
        for child in self.children:
            env = dict(child.spec.env)
            env.setdefault("PYTHONUNBUFFERED", "1")
            kwargs = {"process_group": 0} if sys.version_info >= (3, 11) else {"start_new_session": True}
            try:
                child.proc = subprocess.Popen(
                    child.spec.cmd,
                    env=env,
                    cwd=child.spec.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    **kwargs,
                )
            except OSError as e:
                self.log("ERROR", child.label, f"failed to start {shlex.join(child.spec.cmd)}: {e}")
                child.done = True
                self.failed = True
                return False
            self.log("INFO", child.label, f"process started with pid [{child.proc.pid}]")
            child.reader = threading.Thread(target=self._read, args=(child,), daemon=True, name=f"read-{child.label}")
            child.reader.start()
            threading.Thread(target=self._wait, args=(child,), daemon=True, name=f"wait-{child.label}").start()
        return True

    def begin_shutdown(self, reason: str) -> None:
        if self.shutting_down:
            return
        self.shutting_down = True
        if any(self._running()):
            self.log(
                "INFO",
                "launch",
                f"{reason}: stopping all processes (SIGINT, then SIGTERM "
                f"and SIGKILL after {self.grace_period:g} s each)",
            )
        self._escalate()

    def _escalate(self) -> None:
        self.stage += 1
        self.stage_started = time.monotonic()
        sig = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)[min(self.stage, 2)]
        for child in self._running():
            if sig != signal.SIGINT:
                self.log("WARNING", child.label, f"still running after {self.grace_period:g} s; sending {sig.name}")
            self._send(child, sig)

    def _running(self):
        return [c for c in self.children if c.proc is not None and not c.done]

    def _handle_exit(self, child: _Child) -> None:
        child.done = True
        if child.reader is not None:
            child.reader.join(timeout=1.0)  # so the tail holds the last lines before we quote it
        rc = child.proc.returncode
        pid = child.proc.pid
        clean = rc == 0 or (
            any(s in child.sent for s in _STOP_SIGNALS)
            and rc in (-signal.SIGINT, -signal.SIGTERM, 128 + signal.SIGINT, 128 + signal.SIGTERM)
        )
        if signal.SIGKILL in child.sent:
            self.failed = True
            self.log("ERROR", child.label, f"did not stop after SIGINT and SIGTERM; killed [pid {pid}]")
        elif clean:
            self.log("INFO", child.label, f"process has finished cleanly [pid {pid}]")
        else:
            self.failed = True
            what = f"exit code {rc}" if rc >= 0 else f"killed by signal {_signame(-rc)}"
            node = child.spec.node
            who = f"node '{node.fully_qualified_name or node.executable}'" if node else "process"
            lines = [
                f"process has died [pid {pid}, {what}]: {who} ({child.spec.source}), cmd: {shlex.join(child.spec.cmd)}"
            ]
            if child.tail:
                lines.append(f"last {len(child.tail)} line(s) of its output:")
                lines += [f"    {line}" for line in child.tail]
            else:
                lines.append("it printed nothing")
            self.log("ERROR", child.label, "\n".join(lines))
            self.begin_shutdown(f"{child.label} failed")
            return
        if child.spec.on_exit_shutdown:
            self.begin_shutdown(f'{child.label} exited and has on_exit="shutdown"')

    def run(self) -> int:
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in _STOP_SIGNALS:
                handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            if not self.children:
                self.log("INFO", "launch", "no processes to start")
                return 0
            if not self.start():
                self.begin_shutdown("a process could not be started")
            seen_signals = 0
            while self._running():
                while seen_signals < len(self.signals_received):
                    signum = self.signals_received[seen_signals]
                    seen_signals += 1
                    name = _signame(signum)
                    if not self.shutting_down:
                        self.log("WARNING", "launch", f"received {name}")
                        self.begin_shutdown(f"received {name}")
                    elif self.stage < 2:
                        self.log("WARNING", "launch", f"received {name} again: escalating")
                        self._escalate()
                try:
                    self._handle_exit(self.events.get(timeout=0.05))
                except queue.Empty:
                    pass
                if self.shutting_down and self.stage < 2 and time.monotonic() - self.stage_started > self.grace_period:
                    self._escalate()
            # wait-threads may have queued exits after the loop saw the last running child end
            while not self.events.empty():
                self.events.get_nowait()
            for child in self.children:
                if child.reader is not None:
                    child.reader.join(timeout=1.0)
            return 1 if self.failed else 0
        finally:
            for sig, previous in handlers.items():
                signal.signal(sig, previous)


def _signame(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


def run(plan: LaunchPlan, grace_period: float = 5.0, out: IO[str] | None = None) -> int:
    """Run every process of ``plan`` until all have exited; return 0 (clean) or 1 (a failure).

    The plan's temporary parameter files are deleted when this returns.
    """
    try:
        return ProcessGroup(plan, grace_period, out).run()
    finally:
        plan.cleanup()
