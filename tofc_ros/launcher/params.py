"""Inline ``<param name= value=>`` values, typed in launch_ros's three steps.

1. Reading the file (:func:`parse_value`): the XML frontend types the *raw text* by YAML rules before
   any substitution (``value="'3'"`` is the string ``3``; text that is not YAML stays text) or by
   ``type=`` (``str``, ``int``, ``float``, ``bool``, ``list_of_*``, ``yaml``); ``value-sep=``
   splits it into a list first. The YAML frontend keeps its own types (``'3'`` stays a string).
   Lists must hold one type.
2. Still while reading: a string that holds substitutions is kept for later; one without them is
   final. In a list, each item on its own (``value="[$(var c)]"`` is a one-item list whatever ``c``
   holds).
3. Running the node (:func:`evaluate`): substituted text is typed again, by ``type=`` or else by YAML
   (an empty result stays the empty string).

Each step raises :class:`~.errors.LaunchError` where launch_ros raises, with a message naming the
parameter; the runner's errors happen at the same step (reading or running) as launch_ros's.
"""

from dataclasses import dataclass
from typing import Any

import yaml

from .substitutions import Context, Template, Where, parse, perform

SCALARS = (int, float, bool, str)
# type= identifier -> (scalar type or None for YAML rules, is a list)
TYPES = {
    "str": (str, False),
    "bool": (bool, False),
    "float": (float, False),
    "int": (int, False),
    "list_of_str": (str, True),
    "list_of_bool": (bool, True),
    "list_of_float": (float, True),
    "list_of_int": (int, True),
    "yaml": (None, False),
}


@dataclass(frozen=True)
class ValueType:
    scalar: type | None  # None: YAML rules
    is_list: bool = False

    def describe(self) -> str:
        if self.scalar is None:
            return "a YAML value"
        name = self.scalar.__name__
        return f"a list of {name}" if self.is_list else name


ANY = ValueType(None, False)
Item = int | float | bool | str | Template


@dataclass(frozen=True)
class ParamValue:
    """A parameter value after reading: final (``value``) or holding templates to evaluate later."""

    value: Item | list[Item]
    type: ValueType


def value_type(identifier: str | None, where: Where) -> ValueType:
    if identifier is None:
        return ANY
    if identifier not in TYPES:
        raise where.error(f"<param>: type='{identifier}' is not one of {', '.join(TYPES)}")
    scalar, is_list = TYPES[identifier]
    return ValueType(scalar, is_list)


def _valid(value: Any, lenient: bool) -> bool:
    """launch's check that a value is a scalar or a list of one scalar type (strings mixed in if lenient)."""
    if isinstance(value, list):
        if not value:
            return True
        member = next((type(x) for x in value if type(x) is not str), str)
        if member not in SCALARS:
            return False
        allowed = (member, str) if lenient else member
        return all(isinstance(x, allowed) for x in value)
    return isinstance(value, SCALARS)


def _is_instance(value: Any, vtype: ValueType, lenient: bool = False) -> bool:
    if vtype.scalar is None:
        return _valid(value, lenient)
    allowed = (str, vtype.scalar) if lenient else vtype.scalar
    if not vtype.is_list:
        return isinstance(value, allowed)
    return isinstance(value, list) and all(isinstance(x, allowed) for x in value)


class _CoerceError(ValueError):
    pass


def _yaml(text: str, lenient: bool) -> Any:
    if not text:
        return text
    try:
        out = yaml.safe_load(text)
    except yaml.YAMLError:
        if lenient:
            return text
        raise _CoerceError("it is not valid YAML") from None
    if not _valid(out, lenient):
        raise _CoerceError(f"YAML reads it as {_describe(out)}, not a bool, int, float, str or a list of one of those")
    return out


def _describe(value: Any) -> str:
    if isinstance(value, list):
        return f"the mixed list {value!r}"
    if value is None:
        return "null"
    return f"{type(value).__name__} {value!r}"


def coerce(text: str, vtype: ValueType, lenient: bool) -> Any:
    """launch's coerce_to_type: text to ``vtype``; ``lenient`` keeps text that does not convert."""
    scalar = vtype.scalar
    if scalar is None:
        return _yaml(text, lenient)
    if vtype.is_list:
        out = _yaml(text, lenient)
        allowed = (str, scalar) if lenient else scalar
        if not isinstance(out, list) or not all(isinstance(x, allowed) for x in out):
            raise _CoerceError(f"it is not {vtype.describe()}")
        return out
    if scalar is str:
        return text
    if scalar in (int, float):
        try:
            return scalar(text)
        except ValueError:
            if lenient:
                return text
            raise _CoerceError(f"it is not {scalar.__name__}") from None
    text = {"1": "true", "0": "false"}.get(text, text)
    out = _yaml(text, lenient)
    if isinstance(out, (str, bool) if lenient else bool):
        return out
    raise _CoerceError("it is not a bool")


def parse_value(raw: Any, vtype: ValueType, name: str, where: Where, *, xml: bool) -> ParamValue:
    """Steps 1 and 2: the ``value`` attribute as read from the file (see the module docstring).

    Args:
        raw: XML: the attribute text, or the list ``value-sep`` made of it; YAML: the parsed value.
    """

    def bad(why: str) -> Exception:
        return where.error(f"<param name='{name}'>: value {raw!r} {why}")

    # 1. the frontend's typing
    if xml:
        try:
            if isinstance(raw, list):
                if vtype.scalar is not None and not vtype.is_list:
                    raise _CoerceError(f"is a list (value-sep), but type is {vtype.describe()}")
                value = [coerce(item, ValueType(vtype.scalar), lenient=True) for item in raw]
                if not _valid(value, lenient=True):
                    raise _CoerceError("is not a list of one type")
            else:
                value = coerce(raw, vtype, lenient=True)
        except _CoerceError as e:
            raise bad(f"cannot be read as {vtype.describe()}: {e}") from None
    else:
        if not _is_instance(raw, vtype, lenient=True):
            raise bad(f"is not {vtype.describe()} (YAML {type(raw).__name__}); quote text")
        value = raw

    # 2. substitutions: literal text is final, text with substitutions is kept for later
    types = set()

    def read(item: Any) -> Item:
        if isinstance(item, str):
            template = parse(item, where)
            if template.is_literal:
                types.add(str)
                return template.literal
            return template
        types.add(type(item))
        return item

    value = [read(x) for x in value] if isinstance(value, list) else read(value)
    if len(types) > 1:
        raise bad("is a list of mixed types (launch requires one type)")

    # launch_ros's ParameterValue: a final scalar must already have the type asked for
    if isinstance(value, SCALARS):
        if vtype.scalar is not None and not _is_instance(value, vtype):
            raise bad(f"is not {vtype.describe()}")
        return ParamValue(value, vtype)
    if isinstance(value, Template):
        return ParamValue(value, vtype)
    if vtype.scalar is not None and not vtype.is_list:
        raise bad(f"is a list, but type is {vtype.describe()}")
    kinds = {Template if isinstance(x, Template) else type(x) for x in value}
    if kinds == {Template}:  # typed item by item when the node runs
        return ParamValue(value, vtype)
    fixed = kinds - {Template}
    for allowed, result in (({str}, str), ({bool}, bool), ({int}, int), ({int, float}, float)):
        if fixed <= allowed:
            if vtype.scalar not in (None, result):
                raise bad(f"holds {result.__name__} items, but type is {vtype.describe()}")
            if result is float:
                value = [x if isinstance(x, Template) else float(x) for x in value]
            return ParamValue(value, vtype)
    raise bad("is a list of mixed types (launch requires one type)")


def evaluate(pv: ParamValue, name: str, ctx: Context) -> Any:
    """Step 3: the value the node gets (launch_ros's perform_typed_substitution)."""

    def bad(text: str, why: str) -> Exception:
        return ctx.error(f"<param name='{name}'>: value '{text}' {why}")

    value, vtype = pv.value, pv.type
    if isinstance(value, SCALARS):
        return value
    if isinstance(value, Template):
        text = perform(value, ctx)
        try:
            return coerce(text, vtype, lenient=False)
        except _CoerceError as e:
            raise bad(text, f"cannot be {vtype.describe()}: {e}") from None
    item_type = ValueType(vtype.scalar)
    out = []
    for item in value:
        if isinstance(item, Template):
            text = perform(item, ctx)
            try:
                item = coerce(text, item_type, lenient=False)
            except _CoerceError as e:
                raise bad(text, f"(a list item) cannot be {item_type.describe()}: {e}") from None
        out.append(item)
    if not _is_instance(out, vtype if vtype.scalar is not None else ANY):
        raise ctx.error(
            f"<param name='{name}'>: the list {out!r} is not "
            f"{'a list of one type' if vtype.scalar is None else vtype.describe()}"
        )
    return out


def split_sep(text: str, sep: str) -> list[str]:
    """``value-sep``: launch splits the raw text with Python's str.split."""
    return text.split(sep)
