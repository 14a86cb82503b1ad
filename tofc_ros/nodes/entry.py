"""The shared `main` of every node: init, build, spin, shut down cleanly on SIGINT and SIGTERM."""

from __future__ import annotations

from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from tofc_ros.nodes.parameters import ParameterError

EXIT_BAD_PARAMETER = 2


class StartupError(RuntimeError):
    """The node cannot start with its configuration (a model or codec file missing or invalid)."""


def run_node(factory: Callable[[], Node], name: str, args=None) -> int:
    """Spin the node `factory` builds until shutdown; return the process exit code.

    rclpy installs SIGINT and SIGTERM handlers that shut the context down, so `spin` returns (or raises
    ExternalShutdownException) on either signal and the node is destroyed before the process exits.
    """
    rclpy.init(args=args)
    node = None
    try:
        node = factory()
        rclpy.spin(node)
    except ParameterError as exc:
        rclpy.logging.get_logger(name).fatal(f"bad parameter: {exc}")
        return EXIT_BAD_PARAMETER
    except StartupError as exc:
        rclpy.logging.get_logger(name).fatal(f"cannot start: {exc}")
        return EXIT_BAD_PARAMETER
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def spin_until(node: Node, done: Callable[[], bool], period_s: float) -> None:
    """Spin `node` until `done()` or shutdown, checking `done` at least every `period_s` seconds.

    One executor for the whole run: ``rclpy.spin_once(node)`` adds and removes the node on every call.
    """
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    while rclpy.ok() and not done():
        executor.spin_once(timeout_sec=period_s)
