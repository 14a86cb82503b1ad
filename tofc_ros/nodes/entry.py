"""The shared `main` of every node: init, build, spin (until done, for the nodes that finish), shut down cleanly on
SIGINT and SIGTERM, and turn the outcome into the process exit code."""

from __future__ import annotations

from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from tofc_ros.nodes.parameters import ParameterError

EXIT_BAD_PARAMETER = 2


class StartupError(RuntimeError):
    """The node cannot start with its configuration (a model, codec or bag missing or invalid)."""


def run_node(
    factory: Callable[[], Node],
    name: str,
    args=None,
    *,
    done: Callable[[Node], bool] | None = None,
    finish: Callable[[Node, bool], int] | None = None,
) -> int:
    """Build the node ``factory`` makes and spin it; return the process exit code.

    Args:
        factory: builds the node (after ``rclpy.init``).
        name: the logger name for start-up failures.
        args: ROS arguments.
        done: for nodes that finish (replay, demo client): spin until ``done(node)``; else until shutdown.
        finish: ``finish(node, interrupted) -> exit code``, called before the node is destroyed, also after a
            signal (a replay still writes what it recorded).

    rclpy installs SIGINT and SIGTERM handlers that shut the context down, so spinning returns (or raises
    ExternalShutdownException) on either signal and the node is destroyed before the process exits.
    """
    rclpy.init(args=args)
    node = None
    interrupted = False
    code = 0
    try:
        node = factory()
        if done is None:
            rclpy.spin(node)
        else:
            _spin_until(node, lambda: done(node), 0.05)
    except (ParameterError, StartupError) as exc:
        what = "bad parameter" if isinstance(exc, ParameterError) else "cannot start"
        rclpy.logging.get_logger(name).fatal(f"{what}: {exc}")
        code = EXIT_BAD_PARAMETER
    except (KeyboardInterrupt, ExternalShutdownException):
        interrupted = True
    finally:
        if node is not None:
            try:
                if finish is not None:
                    code = finish(node, interrupted)
            finally:
                node.destroy_node()
        rclpy.try_shutdown()
    return code


def _spin_until(node: Node, done: Callable[[], bool], period_s: float) -> None:
    """Spin ``node`` until ``done()`` or shutdown, checking ``done`` at least every ``period_s`` seconds.

    One executor for the whole run: ``rclpy.spin_once(node)`` adds and removes the node on every call.
    """
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    while rclpy.ok() and not done():
        executor.spin_once(timeout_sec=period_s)
