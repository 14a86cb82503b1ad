"""``$(...)`` substitutions in attribute values, parsed and evaluated as ROS 2 Jazzy's launch does.

Grammar (launch's ``frontend/grammar.lark``, restated; ``\\x`` means a backslash then ``x``)::

    template    := (text | subst)+                 text: anything; '$(' starts a subst unless '\\$('
    subst       := '$(' NAME (' ' argument)* ')'   exactly one space before each argument
    argument    := part+ | '...' | "..."           a quoted argument is the whole argument
    part        := subst | word                    word: no space, quote or parenthesis, except \\( \\) \\' \\"
    '...'       := (subst | text without ')*       likewise "..."; \\' (\\") is a quote inside

Every literal piece drops the backslash before any character (``a\\b`` is ``ab``, ``\\$(x)`` is
``$(x)``); a backslash at the end of a piece stays. Substitutions inside a quoted argument take
unquoted arguments only.

Supported: ``var`` (NAME [default]), ``env`` (NAME [default]), ``find-pkg-share``, ``find-pkg-prefix``,
``dirname``, ``filename``, ``anon``, ``not``, ``and``, ``or``, and ``eval`` restricted to literals,
arithmetic, comparisons and boolean logic (evaluated by walking the AST, never by ``eval()``).
Anything else is refused with an error naming the file, line and substitution.

Parsing happens when a launch file is read (as launch parses the whole file before running it), so a
syntax error or an unknown substitution fails the launch even inside ``if="false"``; evaluation
happens when the action runs.
"""

import ast
import math
import operator
import os
import random
import re
import shlex
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import yaml

from tofc_ros.ament_index import PackageNotFoundError
from tofc_ros.ament_index import package_share as _package_share
from tofc_ros.ament_index import require_package_prefix as _require_package_prefix

from .errors import LaunchError

# name -> (fewest, most) arguments, as launch's parse() methods check them.
ARITY = {
    "var": (1, 2),
    "env": (1, 2),
    "find-pkg-share": (1, 1),
    "find-pkg-prefix": (1, 1),
    "dirname": (0, 0),
    "filename": (0, 0),
    "anon": (1, 1),
    "eval": (1, 1),
    "not": (1, 1),
    "and": (2, 2),
    "or": (2, 2),
}
SUPPORTED = tuple(ARITY)
# Substitutions launch has but this runner does not implement, with what to use instead.
_NOT_IMPLEMENTED = {
    "command": "it runs a shell command while launching",
    "find-exec": None,
    "exec-in-pkg": None,
    "file-content": None,
    "param": None,
    "if": "use if=/unless= on the action, or $(eval)",
    "equals": 'use $(eval \'"a" == "b"\')',
    "not-equals": 'use $(eval \'"a" != "b"\')',
    "any": "use $(or)",
    "all": "use $(and)",
    "log_dir": None,
    "launch_log_dir": None,
}


@dataclass(frozen=True)
class Where:
    """A tag's location, for error messages."""

    file: str | None = None
    line: int | None = None

    def error(self, what: str) -> LaunchError:
        return LaunchError(what, self.file, self.line)


@dataclass(frozen=True)
class Subst:
    """One ``$(name arg ...)``; each argument is itself a template."""

    name: str
    args: tuple["Template", ...]


@dataclass(frozen=True)
class Template:
    """A parsed attribute value: literal text (escapes already removed) and substitutions."""

    parts: tuple[str | Subst, ...]
    source: str = ""

    @property
    def is_literal(self) -> bool:
        return all(isinstance(p, str) for p in self.parts)

    @property
    def literal(self) -> str:
        """The text of a template without substitutions."""
        assert self.is_literal
        return "".join(self.parts)


def unescape(text: str) -> str:
    """launch's rule: drop the backslash before any character (not before a line end)."""
    return re.sub(r"\\(.)", r"\1", text)


# -- parsing -------------------------------------------------------------------------------------


class _Parser:
    """Recursive descent over one attribute value; see the module docstring for the grammar."""

    _NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")

    def __init__(self, text: str, where: Where):
        self.text = text
        self.where = where

    def fail(self, pos: int, what: str) -> LaunchError:
        shown = self.text if len(self.text) <= 120 else self.text[:117] + "..."
        return self.where.error(
            f"{what} at column {pos + 1} of '{shown}' (launch's substitution "
            "syntax: $(name arg ...), one space between arguments)"
        )

    def starts_subst(self, pos: int) -> bool:
        return self.text.startswith("$(", pos) and (pos == 0 or self.text[pos - 1] != "\\")

    def template(self) -> Template:
        parts: list[str | Subst] = []
        pos, start = 0, 0
        while pos < len(self.text):
            if self.starts_subst(pos):
                if pos > start:
                    parts.append(unescape(self.text[start:pos]))
                sub, pos = self.subst(pos, None)
                parts.append(sub)
                start = pos
            else:
                pos += 1
        if start < len(self.text) or not parts:
            parts.append(unescape(self.text[start:]))
        return Template(tuple(parts), self.text)

    def subst(self, pos: int, quote: str | None) -> tuple[Subst, int]:
        """``$(NAME args)`` at ``pos``; ``quote`` is the enclosing quote character, if any."""
        start = pos
        m = self._NAME.match(self.text, pos + 2)
        if not m:
            raise self.fail(pos + 2, 'expected a substitution name after "$("')
        name, pos = m.group(0), m.end()
        args: list[Template] = []
        while True:
            if pos >= len(self.text):
                raise self.fail(start, f"unterminated substitution '$({name}' (missing ')')")
            if self.text[pos] == ")":
                pos += 1
                break
            if self.text[pos] != " ":
                raise self.fail(pos, f"unexpected '{self.text[pos]}' in $({name} ...)")
            pos += 1
            arg, pos = self.argument(pos, quote)
            args.append(arg)
        self.check_name(name, len(args), start)
        return Subst(name, tuple(args)), pos

    def check_name(self, name: str, count: int, pos: int) -> None:
        if name not in ARITY:
            if name == "optenv":
                raise self.where.error(
                    "$(optenv ...) is not a ROS 2 launch substitution (launch "
                    "fails on it): write $(env NAME '') for an optional variable"
                )
            if name in _NOT_IMPLEMENTED:
                hint = _NOT_IMPLEMENTED[name]
                raise self.where.error(
                    f"$({name} ...) is not supported by this runner"
                    + (f" ({hint})" if hint else "")
                    + f"; supported: {', '.join(SUPPORTED)}"
                )
            raise self.where.error(
                f"unknown substitution '$({name} ...)' (ROS 2 launch fails on it "
                f"too); supported: {', '.join(SUPPORTED)}"
            )
        low, high = ARITY[name]
        if not low <= count <= high:
            want = str(low) if low == high else f"{low} or {high}"
            extra = ""
            if name == "eval" and count == 2:
                extra = " (a list of modules to import is not supported)"
            elif name == "eval":
                extra = ": quote the expression, e.g. $(eval '1 + 2')"
            raise self.where.error(f"$({name}) takes {want} argument(s), got {count}{extra}")

    def argument(self, pos: int, quote: str | None) -> tuple[Template, int]:
        if quote is None and pos < len(self.text) and self.text[pos] in "'\"":
            return self.quoted(pos)
        parts: list[str | Subst] = []
        start = pos
        while pos < len(self.text):
            if self.starts_subst(pos):
                if pos > start:
                    parts.append(unescape(self.text[start:pos]))
                sub, pos = self.subst(pos, quote)
                parts.append(sub)
                start = pos
                continue
            step = self.word_char(pos, quote)
            if not step:
                break
            pos += step
        if pos > start:
            parts.append(unescape(self.text[start:pos]))
        if not parts:
            raise self.fail(pos, "expected an argument")
        return Template(tuple(parts), self.text), pos

    def word_char(self, pos: int, quote: str | None) -> int:
        """How many characters an unquoted argument takes at ``pos`` (0: it ends here)."""
        ch = self.text[pos]
        prev = self.text[pos - 1] if pos else ""
        if ch == "\\":
            nxt = self.text[pos + 1] if pos + 1 < len(self.text) else ""
            if nxt in ('"', "'"):
                return 2
            return 1
        if ch == " ":
            return 0
        if ch in "()":
            return 1 if prev == "\\" else 0
        if ch == "$":
            return 1  # not '$(' here: the caller checked for a substitution first
        if ch in "'\"":
            # a quote of the other kind is an ordinary character inside a quoted argument
            return 1 if quote is not None and ch != quote else 0
        return 1

    def quoted(self, pos: int) -> tuple[Template, int]:
        quote = self.text[pos]
        pos += 1
        parts: list[str | Subst] = []
        start = pos
        while True:
            if pos >= len(self.text):
                raise self.fail(start - 1, f"unterminated {quote}quoted{quote} argument")
            ch = self.text[pos]
            if self.starts_subst(pos):
                if pos > start:
                    parts.append(unescape(self.text[start:pos]))
                sub, pos = self.subst(pos, quote)
                parts.append(sub)
                start = pos
            elif ch == "\\" and self.text.startswith(quote, pos + 1):
                pos += 2
            elif ch == quote:
                break
            else:
                pos += 1
        if pos > start:
            parts.append(unescape(self.text[start:pos]))
        return Template(tuple(parts), self.text), pos + 1


def parse(text: str, where: Where = Where()) -> Template:
    """Parse one attribute value; raises LaunchError for launch's syntax errors and unknown names."""
    if text == "":
        return Template(("",), text)
    return _Parser(text, where).template()


# -- evaluation ----------------------------------------------------------------------------------


@dataclass
class Context:
    """What substitutions read: launch configurations, the environment, the current launch file.

    ``current_file`` is launch's "current launch file" local: set when a file starts and by every
    ``<include>`` it runs, and not restored afterwards (see :mod:`.actions`). None outside a file.
    """

    configs: dict[str, str]
    env: dict[str, str]
    current_file: str | None
    where: Where = Where()

    def error(self, what: str) -> LaunchError:
        return self.where.error(what)

    def at(self, where: Where) -> "Context":
        """The same state, reporting errors at ``where``."""
        return Context(self.configs, self.env, self.current_file, where)


def perform(template: Template, ctx: Context) -> str:
    return "".join(p if isinstance(p, str) else _perform(p, ctx) for p in template.parts)


def substitute(text: str, ctx: Context) -> str:
    """Parse and evaluate one attribute value."""
    return perform(parse(text, ctx.where), ctx)


def _perform(sub: Subst, ctx: Context) -> str:
    name = sub.name
    if name == "var":
        key = perform(sub.args[0], ctx)
        if key in ctx.configs:
            return ctx.configs[key]
        if len(sub.args) == 2:
            return perform(sub.args[1], ctx)
        known = ", ".join(sorted(k for k in ctx.configs if k != "ros_namespace")) or "none"
        raise ctx.error(
            f"$(var {key}): launch configuration '{key}' is not set (set here: "
            f"{known}); give a default with $(var {key} <default>)"
        )
    if name == "env":
        default = perform(sub.args[1], ctx) if len(sub.args) == 2 else None  # launch: first
        key = perform(sub.args[0], ctx)
        value = ctx.env.get(key, default)
        if value is None:
            raise ctx.error(
                f"$(env {key}): environment variable '{key}' is not set (give a "
                f"default: $(env {key} <default>), or $(env {key} '') for empty)"
            )
        return value
    if name in ("find-pkg-share", "find-pkg-prefix"):
        package = perform(sub.args[0], ctx)
        try:
            if name == "find-pkg-share":
                return _package_share(package, ctx.env)
            return _require_package_prefix(package, ctx.env)
        except PackageNotFoundError as e:
            raise ctx.error(f"$({name} {package}): {e}") from None
    if name in ("dirname", "filename"):
        if ctx.current_file is None:
            raise ctx.error(
                f"$({name}) has no launch file here (launch evaluates the paths of nested includes without one)"
            )
        path = os.path.abspath(ctx.current_file)
        return os.path.dirname(path) if name == "dirname" else path
    if name == "anon":
        return _anon(perform(sub.args[0], ctx), ctx)
    if name == "eval":
        return str(safe_eval(perform(sub.args[0], ctx), ctx))
    if name == "not":
        return str(not to_bool(perform(sub.args[0], ctx), ctx, "not")).lower()
    if name in ("and", "or"):
        left = to_bool(perform(sub.args[0], ctx), ctx, name)
        right = to_bool(perform(sub.args[1], ctx), ctx, name)
        return str(left and right if name == "and" else left or right).lower()
    raise ctx.error(f"unsupported substitution '$({name})'")  # parse() refuses these first


def _anon(name: str, ctx: Context) -> str:
    """launch's AnonName: ``<name>_<host>_<pid>_<random>``, kept as configuration 'anon<name>'."""
    key = "anon" + name
    if key not in ctx.configs:
        value = f"{name}_{socket.gethostname()}_{os.getpid()}_{random.randint(0, sys.maxsize)}"
        ctx.configs[key] = value.replace(".", "_").replace("-", "_").replace(":", "_")
    return ctx.configs[key]


def to_bool(value: str, ctx: Context, what: str) -> bool:
    """launch's coercion of a substituted text to bool: '1'/'0', else a YAML boolean."""
    text = {"1": "true", "0": "false"}.get(value, value)
    try:
        result = yaml.safe_load(text) if text else text
    except yaml.YAMLError:
        result = None
    if not isinstance(result, bool):
        raise ctx.error(
            f"$({what}): '{value}' is not a boolean (true, false, 1, 0, or another YAML boolean such as yes/no/on/off)"
        )
    return result


def evaluate_condition(value: str, ctx: Context) -> bool:
    """launch's rule for ``if=``/``unless=``: true/false/1/0 after strip() and lower()."""
    lowered = value.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise ctx.error(
        f"condition evaluated to '{value}'; expected true, false, 1 or 0 (any case, surrounding blanks ignored)"
    )


# -- command lines ---------------------------------------------------------------------------------


def parse_command_line(text: str, where: Where) -> list[list[str | Subst]]:
    """Split ``args=``/``cmd=``/``ros_args=`` into words the way launch does, at parse time.

    Each literal piece between substitutions is split with ``shlex`` (so ``'x y'`` is one word and
    quotes are removed); a substitution's value is never split, and joins the word it touches.
    Quirk kept from launch: a blank-only piece ends the current word even when it is empty, so
    ``args=" $(var x)"`` starts with an empty argument.
    """
    words: list[list[str | Subst]] = []
    word: list[str | Subst] = []
    for piece in parse(text, where).parts:
        if isinstance(piece, Subst):
            word.append(piece)
            continue
        try:
            tokens = shlex.split(piece)
        except ValueError as e:
            raise where.error(
                f"cannot split '{text}' into arguments: {e} (launch splits the literal text like a shell)"
            ) from None
        if not tokens:
            words.append(word)
            word = []
            continue
        if piece[0].isspace() and word:
            words.append(word)
            word = []
        word.append(tokens[0])
        if len(tokens) > 1:
            words.append(word)
            word = [tokens[-1]]
        words.extend([t] for t in tokens[1:-1])
        if piece[-1].isspace():
            words.append(word)
            word = []
    if word:
        words.append(word)
    return words


def perform_words(words: Sequence[Sequence[str | Subst]], ctx: Context) -> list[str]:
    return ["".join(p if isinstance(p, str) else _perform(p, ctx) for p in w) for w in words]


def split_command_line(text: str, ctx: Context) -> list[str]:
    """Parse and evaluate a command-line attribute (see :func:`parse_command_line`)."""
    return perform_words(parse_command_line(text, ctx.where), ctx)


# -- $(eval) ---------------------------------------------------------------------------------------

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}
_MAX_RESULT = 10_000
_MATH_NAMES = frozenset(n for n in dir(math) if not n.startswith("_")) | {"math"}


def safe_eval(expression: str, ctx: Context):
    """Evaluate literals, + - * / // % **, comparisons, and/or/not and ``a if c else b``.

    launch's ``$(eval)`` runs the text as Python (``math``'s names in scope), and ``str()`` of the
    result is the substitution's value. Launch files here only need conditions such as
    ``$(eval '$(var n) > 1 and "$(var mode)" == "tofc"')``, so names, calls, attributes and
    subscripts are refused: never code, and never a result that differs from launch's.
    """
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as e:
        raise ctx.error(
            f"$(eval '{expression}'): not a Python expression ({e.msg}); ROS 2 launch fails on it too"
        ) from None

    def ev(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, complex, str, bool, type(None))):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in ("true", "false"):
                raise ctx.error(
                    f"$(eval '{expression}'): '{node.id}' is not a Python name (ROS 2 launch fails "
                    f"with NameError): a boolean is True/False, or compare the text: "
                    f'\'"$(var x)" == "{node.id}"\''
                )
            if node.id in _MATH_NAMES:
                raise ctx.error(
                    f"$(eval '{expression}'): math's names ('{node.id}') are not "
                    "supported by this runner; use arithmetic operators"
                )
            raise ctx.error(
                f"$(eval '{expression}'): name '{node.id}' is not defined (ROS 2 launch "
                "fails too; quote text: '\"...\"')"
            )
        if isinstance(node, ast.Tuple):
            return tuple(ev(e) for e in node.elts)
        if isinstance(node, ast.List):
            return [ev(e) for e in node.elts]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub, ast.UAdd)):
            value = ev(node.operand)
            if isinstance(node.op, ast.Not):
                return not value
            try:
                return -value if isinstance(node.op, ast.USub) else +value
            except TypeError as e:
                raise ctx.error(f"$(eval '{expression}'): {e}") from None
        if isinstance(node, ast.BoolOp):
            result = None
            for v in node.values:
                result = ev(v)
                if isinstance(node.op, ast.And) and not result:
                    return result
                if isinstance(node.op, ast.Or) and result:
                    return result
            return result
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and isinstance(right, (int, float)) and abs(right) > 64:
                raise ctx.error(f"$(eval '{expression}'): exponent too large for this runner")
            if isinstance(node.op, ast.Mult) and (
                isinstance(left, (str, list, tuple)) or isinstance(right, (str, list, tuple))
            ):
                seq, count = (left, right) if isinstance(left, (str, list, tuple)) else (right, left)
                if isinstance(count, int) and count * len(seq) > _MAX_RESULT:
                    raise ctx.error(f"$(eval '{expression}'): result too large for this runner")
            try:
                return _BINARY[type(node.op)](left, right)
            except (TypeError, ZeroDivisionError, OverflowError, ValueError) as e:
                raise ctx.error(f"$(eval '{expression}'): {e}") from None
        if isinstance(node, ast.Compare):
            left = ev(node.left)
            for op, comparator in zip(node.ops, node.comparators):
                right = ev(comparator)
                try:
                    if not _COMPARE[type(op)](left, right):
                        return False
                except TypeError as e:
                    raise ctx.error(f"$(eval '{expression}'): {e}") from None
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return ev(node.body) if ev(node.test) else ev(node.orelse)
        if isinstance(node, ast.Call):
            raise ctx.error(
                f"$(eval '{expression}'): function calls are not supported by this "
                "runner (ROS 2 launch runs $(eval) as Python; this runner evaluates "
                "literals and operators only)"
            )
        raise ctx.error(
            f"$(eval '{expression}'): only literals, arithmetic, comparisons and "
            f"and/or/not are supported by this runner, not {type(node).__name__}"
        )

    return ev(tree.body)
