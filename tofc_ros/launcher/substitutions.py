"""``$(...)`` substitutions in attribute values, as ROS 2 launch frontends write them.

Grammar (the subset of launch's lark grammar that launch files use)::

    template  := (text | subst)*          text: anything but '$(' ; '\\$' is a literal '$'
    subst     := '$(' NAME (WS argument)* ')'
    argument  := (chars | subst | 'single quoted' | "double quoted")+   quotes may hold substs

Supported: ``var``, ``env`` (NAME [default]), ``optenv`` (NAME [default]), ``find-pkg-share``,
``find-pkg-prefix``, ``dirname``, ``filename``, ``anon``, and ``eval`` restricted to literals,
arithmetic, comparisons and boolean logic (evaluated by walking the AST, never by ``eval()``).
``$(command ...)`` and anything else are refused with an error naming the file and line.
"""

import ast
import operator
import os
import re
import uuid
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Union

from . import ament
from .errors import LaunchError

SUPPORTED = ('var', 'env', 'optenv', 'find-pkg-share', 'find-pkg-prefix', 'dirname', 'filename',
             'anon', 'eval')


@dataclass
class Subst:
    name: str
    args: List[List['Fragment']]


Fragment = Union[str, Subst]


@dataclass
class Context:
    """What substitutions read: launch configurations, the environment, the current launch file."""

    configs: Dict[str, str]
    env: Dict[str, str]
    current_file: str
    anon_names: Dict[str, str] = field(default_factory=dict)
    line: Optional[int] = None  # of the tag being evaluated, for error messages

    def error(self, what: str) -> LaunchError:
        return LaunchError(what, self.current_file, self.line)


_NAME = re.compile(r'[A-Za-z0-9_-]+')


def parse(text: str, ctx: Context) -> List[Fragment]:
    fragments, pos = _parse_template(text, 0, ctx, top=True)
    return fragments


def _parse_template(text, pos, ctx, top):
    out, buf = [], []
    while pos < len(text):
        if text.startswith('\\$', pos):
            buf.append('$')
            pos += 2
        elif text.startswith('$(', pos):
            if buf:
                out.append(''.join(buf))
                buf = []
            sub, pos = _parse_subst(text, pos, ctx)
            out.append(sub)
        else:
            buf.append(text[pos])
            pos += 1
    if buf:
        out.append(''.join(buf))
    return out, pos


def _parse_subst(text, pos, ctx):
    start = pos
    pos += 2
    m = _NAME.match(text, pos)
    if not m:
        raise ctx.error(f"substitution without a name in '{text}'")
    name = m.group(0)
    pos = m.end()
    args = []
    while True:
        if pos >= len(text):
            raise ctx.error(f"unterminated substitution '{text[start:]}' (missing ')')")
        ch = text[pos]
        if ch == ')':
            pos += 1
            break
        if ch.isspace():
            pos += 1
            continue
        arg, pos = _parse_argument(text, pos, ctx)
        args.append(arg)
    if name not in SUPPORTED:
        hint = ' (it runs a shell command)' if name == 'command' else ''
        raise ctx.error(f"unsupported substitution '$({name} ...)'{hint}; "
                        f"supported: {', '.join(SUPPORTED)}")
    return Subst(name, args), pos


def _parse_argument(text, pos, ctx):
    parts, buf = [], []
    while pos < len(text):
        ch = text[pos]
        if ch.isspace() or ch == ')':
            break
        if text.startswith('$(', pos):
            if buf:
                parts.append(''.join(buf))
                buf = []
            sub, pos = _parse_subst(text, pos, ctx)
            parts.append(sub)
        elif ch in '\'"':
            end_quote = ch
            pos += 1
            while True:
                if pos >= len(text):
                    raise ctx.error(f'unterminated quote in substitution argument: {text}')
                if text[pos] == end_quote:
                    pos += 1
                    break
                if text.startswith('$(', pos):
                    if buf:
                        parts.append(''.join(buf))
                        buf = []
                    sub, pos = _parse_subst(text, pos, ctx)
                    parts.append(sub)
                else:
                    buf.append(text[pos])
                    pos += 1
        else:
            buf.append(ch)
            pos += 1
    if buf:
        parts.append(''.join(buf))
    return parts, pos


def evaluate(fragments: List[Fragment], ctx: Context) -> str:
    return ''.join(f if isinstance(f, str) else _evaluate_subst(f, ctx) for f in fragments)


def substitute(text: str, ctx: Context) -> str:
    """Parse and evaluate one attribute value."""
    return evaluate(parse(text, ctx), ctx)


def split_command_line(text: str, ctx: Context) -> List[str]:
    """Split like launch does for ``args=`` / ``cmd=``: on whitespace in the literal text only.

    A substitution's value is never split, so ``args="--ns $(var ns)"`` stays two words even if
    ``ns`` contains a space; quotes are not interpreted (launch does not either).
    """
    words, current, have = [], [], False
    for fragment in parse(text, ctx):
        if isinstance(fragment, Subst):
            current.append(_evaluate_subst(fragment, ctx))
            have = True
            continue
        for i, piece in enumerate(re.split(r'(\s+)', fragment)):
            if piece and piece.isspace():
                if have:
                    words.append(''.join(current))
                current, have = [], False
            elif piece:
                current.append(piece)
                have = True
    if have:
        words.append(''.join(current))
    return words


def _evaluate_subst(sub: Subst, ctx: Context) -> str:
    args = [evaluate(a, ctx) for a in sub.args]

    def arity(lo, hi):
        if not lo <= len(args) <= hi:
            want = str(lo) if lo == hi else f'{lo} to {hi}'
            raise ctx.error(f'$({sub.name}) takes {want} argument(s), got {len(args)}')

    if sub.name == 'var':
        arity(1, 1)
        if args[0] not in ctx.configs:
            known = ', '.join(sorted(ctx.configs)) or 'none'
            raise ctx.error(f"$(var {args[0]}): launch configuration '{args[0]}' is not set "
                            f"(set here: {known})")
        return ctx.configs[args[0]]
    if sub.name == 'env':
        arity(1, 2)
        if args[0] in ctx.env:
            return ctx.env[args[0]]
        if len(args) == 2:
            return args[1]
        raise ctx.error(f"$(env {args[0]}): environment variable '{args[0]}' is not set "
                        f"(give a default: $(env {args[0]} <default>), or use $(optenv ...))")
    if sub.name == 'optenv':
        arity(1, 2)
        return ctx.env.get(args[0], args[1] if len(args) == 2 else '')
    if sub.name in ('find-pkg-share', 'find-pkg-prefix'):
        arity(1, 1)
        try:
            if sub.name == 'find-pkg-share':
                return ament.package_share(args[0], ctx.env)
            return ament.require_package_prefix(args[0], ctx.env)
        except LaunchError as e:
            raise ctx.error(f'$({sub.name} {args[0]}): {e.what}') from None
    if sub.name == 'dirname':
        arity(0, 0)
        return os.path.dirname(os.path.abspath(ctx.current_file))
    if sub.name == 'filename':
        arity(0, 0)
        return os.path.abspath(ctx.current_file)
    if sub.name == 'anon':
        arity(1, 1)
        return ctx.anon_names.setdefault(args[0], f'{args[0]}_{uuid.uuid4().hex[:12]}')
    if sub.name == 'eval':
        if len(args) != 1:
            raise ctx.error(f"$(eval) takes one argument, got {len(args)}: quote the expression, "
                            f"e.g. $(eval '{' '.join(args)}')")
        return str(safe_eval(args[0], ctx))
    raise ctx.error(f"unsupported substitution '$({sub.name})'")  # parse() already refuses these


_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
           ast.Pow: operator.pow}
_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
            ast.NotIn: lambda a, b: a not in b}
_MAX_RESULT = 10_000


def safe_eval(expression: str, ctx: Context):
    """Evaluate literals, + - * / // % **, comparisons, and/or/not and ``a if c else b``.

    ``$(eval)`` in ROS runs arbitrary Python; launch files here only need conditions such as
    ``$(eval '$(var n) > 1 and "$(var mode)" == "tofc"')``, so names, calls and attributes are refused.
    """
    try:
        tree = ast.parse(expression.strip(), mode='eval')
    except SyntaxError as e:
        raise ctx.error(f"$(eval): cannot parse '{expression}': {e.msg}") from None

    def refuse(node):
        raise ctx.error(f"$(eval '{expression}'): only literals, arithmetic, comparisons and "
                        f"and/or/not are supported, not {type(node).__name__}")

    def ev(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool,
                                                                      type(None))):
            return node.value
        if isinstance(node, ast.Name) and node.id in ('true', 'false'):
            return node.id == 'true'  # a substituted 'true' from $(var flag)
        if isinstance(node, (ast.Tuple, ast.List)):
            return tuple(ev(e) for e in node.elts)
        if isinstance(node, ast.UnaryOp):
            value = ev(node.operand)
            if isinstance(node.op, ast.Not):
                return not value
            if isinstance(node.op, ast.USub):
                return -value
            if isinstance(node.op, ast.UAdd):
                return +value
        if isinstance(node, ast.BoolOp):
            if isinstance(node.op, ast.And):
                result = True
                for v in node.values:
                    result = ev(v)
                    if not result:
                        return result
                return result
            result = False
            for v in node.values:
                result = ev(v)
                if result:
                    return result
            return result
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 64:
                raise ctx.error(f"$(eval '{expression}'): exponent too large")
            if isinstance(node.op, ast.Mult) and (isinstance(left, str) or isinstance(right, str)):
                count = right if isinstance(left, str) else left
                if count * len(left if isinstance(left, str) else right) > _MAX_RESULT:
                    raise ctx.error(f"$(eval '{expression}'): result too large")
            try:
                return _BINARY[type(node.op)](left, right)
            except (TypeError, ZeroDivisionError) as e:
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
        refuse(node)

    return ev(tree.body)


def evaluate_condition(value: str, ctx: Context) -> bool:
    """launch's rule for ``if=``/``unless=``: true/false/1/0, case-insensitive; anything else is an error."""
    lowered = value.strip().lower()
    if lowered in ('true', '1'):
        return True
    if lowered in ('false', '0'):
        return False
    raise ctx.error(f"condition evaluated to '{value}'; expected true, false, 1 or 0")
