"""One tree shape for both frontends: a tag with attributes, children and a source location.

The XML and YAML frontends differ only in spelling (XML puts ``<param>`` in child elements, YAML in
a ``param:`` list); both are read into :class:`Entity` so the interpreter has one code path. Tag
names are kept as written: launch knows ``set_env`` but not ``set-env``, and both spellings of
``push_ros_namespace`` only because it registers both.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import LaunchError


@dataclass
class Entity:
    """A launch tag. XML attributes are strings; YAML ones keep their YAML type."""

    kind: str
    attrs: dict[str, Any]
    children: list["Entity"] = field(default_factory=list)
    file: str | None = None
    line: int | None = None
    yaml: bool = False  # read by the YAML frontend (typed attribute values)

    def error(self, what: str) -> LaunchError:
        return LaunchError(f"<{self.kind}>: {what}", self.file, self.line)

    def check(
        self, allowed_attrs: Iterable[str], allowed_children: Iterable[str] | None = (), launch_only: Iterable[str] = ()
    ) -> None:
        """Refuse anything this runner does not implement, rather than silently ignoring it.

        ``launch_only`` names attributes ROS 2 launch accepts here but this runner does not.
        """
        allowed_attrs = set(allowed_attrs)
        launch_only = set(launch_only)
        for name in self.attrs:
            if name in launch_only:
                raise self.error(
                    f"attribute '{name}' is not supported by this runner (ROS 2 launch "
                    f"has it; supported here: {', '.join(sorted(allowed_attrs))})"
                )
            if name not in allowed_attrs:
                raise self.error(
                    f"unknown attribute '{name}' (ROS 2 launch refuses it too; supported: "
                    f"{', '.join(sorted(allowed_attrs))})"
                )
        if allowed_children is None:  # the caller dispatches (and refuses) children itself
            return
        allowed_children = set(allowed_children)
        for child in self.children:
            if child.kind not in allowed_children:
                supported = ", ".join(sorted(allowed_children)) or "none"
                raise child.error(f"not allowed inside <{self.kind}> (allowed here: {supported})")

    def get(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def require(self, name: str) -> Any:
        if name not in self.attrs:
            raise self.error(f"missing required attribute '{name}'")
        return self.attrs[name]
