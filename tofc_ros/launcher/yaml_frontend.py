"""Read a ROS 2 YAML launch file into an :class:`~.entity.Entity` tree, keeping line numbers.

The YAML format mirrors the XML one::

    launch:
    - arg: {name: ns, default: robot}
    - node:
        pkg: tofc_ros
        exec: device_node
        param: [{name: rate, value: 2.0}, {from: $(find-pkg-share tofc_ros)/config/device.yaml}]
        remap: [{from: image, to: /camera/image_raw}]
    - group:
        scoped: true
        children:
        - push-ros-namespace: {namespace: $(var ns)}

A list of mappings under an attribute (``param``, ``remap``, ``arg``, ``env``, ``choice``) becomes child
entities of that kind, as XML child elements would; ``children`` holds nested actions.
Scalar attributes keep their YAML type: a parameter ``value: 3`` stays an int and ``value: '3'`` a
string, and, as in launch, an attribute that must be text (``if``, ``default``, ``args``...) refuses a
YAML number or boolean: quote it.
"""

import yaml

from .entity import Entity
from .errors import LaunchError


def parse_yaml(path: str) -> Entity:
    try:
        with open(path, encoding="utf-8") as f:
            node = yaml.compose(f, Loader=yaml.SafeLoader)
    except OSError as e:
        raise LaunchError(f"cannot read launch file: {e.strerror}", path) from None
    except yaml.YAMLError as e:
        line = e.problem_mark.line + 1 if getattr(e, "problem_mark", None) else None
        raise LaunchError(f"malformed YAML: {getattr(e, 'problem', e)}", path, line) from None
    if not isinstance(node, yaml.MappingNode) or len(node.value) != 1 or node.value[0][0].value != "launch":
        raise LaunchError("a YAML launch file must be a mapping with the single key 'launch'", path, 1)
    key, body = node.value[0]
    return Entity("launch", {}, _actions(body, path), path, key.start_mark.line + 1, yaml=True)


def _line(node) -> int:
    return node.start_mark.line + 1


def _actions(node, path):
    if not isinstance(node, yaml.SequenceNode):
        raise LaunchError("expected a list of actions", path, _line(node))
    out = []
    for item in node.value:
        if not isinstance(item, yaml.MappingNode) or len(item.value) != 1:
            raise LaunchError('each action must be a mapping with one key, e.g. "- node: {...}"', path, _line(item))
        key, body = item.value[0]
        out.append(_entity(key.value, body, path, _line(key)))
    return out


def _entity(kind, body, path, line):
    if isinstance(body, yaml.ScalarNode) and body.value in ("", "~", "null"):
        return Entity(kind, {}, [], path, line, yaml=True)
    if not isinstance(body, yaml.MappingNode):
        raise LaunchError(f"<{kind}>: expected a mapping of attributes", path, line)
    attrs, children = {}, []
    for key_node, value_node in body.value:
        name = key_node.value
        if name == "children":
            children.extend(_actions(value_node, path))
        elif (
            isinstance(value_node, yaml.SequenceNode)
            and value_node.value
            and all(isinstance(v, yaml.MappingNode) for v in value_node.value)
        ):
            for v in value_node.value:
                children.append(_entity(name, v, path, _line(v)))
        else:
            attrs[name] = yaml.safe_load(yaml.serialize(value_node))
    return Entity(kind, attrs, children, path, line, yaml=True)
