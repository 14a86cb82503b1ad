"""Declare a config dataclass's fields as ROS parameters and read them back into the frozen dataclass."""

from __future__ import annotations

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from tofc_ros.config import ParamInfo, describe


class ParameterError(ValueError):
    """A parameter value the node refuses; the message names the parameter and the allowed values."""


def _descriptor(info: ParamInfo) -> ParameterDescriptor:
    desc = ParameterDescriptor(description=info.description, read_only=True)
    # YAML and `-p x:=2` give an integer for a float parameter; accept it (the config dataclass converts and
    # range-checks) instead of rclpy's type error for `2` vs `2.0`.
    desc.dynamic_typing = info.type is float
    if info.choices:
        desc.additional_constraints = "one of: " + ", ".join(info.choices)
    if info.type is int and (info.low is not None or info.high is not None):
        desc.integer_range = [
            IntegerRange(
                from_value=int(info.low if info.low is not None else -(2**63)),
                to_value=int(info.high if info.high is not None else 2**63 - 1),
                step=0,
            )
        ]
    elif info.type is float and (info.low is not None or info.high is not None):
        desc.floating_point_range = [
            FloatingPointRange(
                from_value=float(info.low if info.low is not None else -1e308),
                to_value=float(info.high if info.high is not None else 1e308),
                step=0.0,
            )
        ]
    return desc


def declare_config(node: Node, config_cls):
    """Declare every field of `config_cls` on `node` and return the validated config.

    Raises:
        ParameterError: a value has the wrong type or lies outside its range/choices.
    """
    values = {}
    for info in describe(config_cls):
        try:
            param = node.declare_parameter(info.name, info.default, _descriptor(info))
        except InvalidParameterTypeException as exc:
            raise ParameterError(
                f"parameter '{info.name}' must be of type {info.type.__name__} ({info.description}): {exc}"
            ) from exc
        except InvalidParameterValueException as exc:
            raise ParameterError(f"parameter '{info.name}' refused: {exc}") from exc
        values[info.name] = param.value
    try:
        return config_cls.from_mapping(values)
    except ValueError as exc:
        raise ParameterError(str(exc)) from exc


def qos(reliability: str, depth: int) -> QoSProfile:
    """A keep-last QoS profile from the config's reliability name and depth."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
    )
