"""Read a ROS 2 XML launch file into an :class:`~.entity.Entity` tree, keeping line numbers.

ElementTree forgets line numbers, so the tree is built from expat callbacks directly.
"""

from xml.parsers import expat

from .entity import Entity
from .errors import LaunchError


def parse_xml(path: str) -> Entity:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise LaunchError(f"cannot read launch file: {e.strerror}", path) from None

    parser = expat.ParserCreate()
    stack = []
    roots = []

    def start(tag, attrs):
        entity = Entity(tag, dict(attrs), [], path, parser.CurrentLineNumber)
        if stack:
            stack[-1].children.append(entity)
        else:
            roots.append(entity)
        stack.append(entity)

    def end(tag):
        stack.pop()

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(data, True)
    except expat.ExpatError as e:
        raise LaunchError(f"malformed XML: {expat.errors.messages[e.code]}", path, e.lineno) from None
    root = roots[0]
    if root.kind != "launch":
        raise LaunchError(f"root element must be <launch>, not <{root.kind}>", path, root.line)
    return root
