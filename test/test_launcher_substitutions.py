"""``$(...)`` parsing and evaluation: launch's grammar, escapes, the restricted ``$(eval)``.

test_launcher_corpus.py compares whole launch files with ROS 2 Jazzy; these cases pin the pieces.
"""

import pytest

from tofc_ros.launcher import LaunchError
from tofc_ros.launcher.substitutions import Context, Where, parse, split_command_line, substitute


@pytest.fixture
def ctx(tmp_path):
    return Context(
        {"a": "x", "n": "3", "flag": "true", "spaced": "p q"},
        {"B": "bee", "AMENT_PREFIX_PATH": str(tmp_path / "none")},
        str(tmp_path / "dir" / "f.launch.xml"),
        Where("f.launch.xml", 7),
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("plain", "plain"),
        ("", ""),
        ("$(var a)/$(env B)", "x/bee"),
        ("pre-$(var a)-post", "pre-x-post"),
        ("$(env NOPE dflt)", "dflt"),
        ("$(env NOPE '')", ""),
        ("$(env NOPE 'two words')", "two words"),
        ('$(env NOPE "say $(var a)")', "say x"),
        ("$(env NOPE $(var a))", "x"),
        ("$(env NOPE pre$(var a)post)", "prexpost"),
        ("$(var missing fallback)", "fallback"),
        ("$(var a fallback)", "x"),
        # launch drops the backslash before any character, outside substitutions too
        ("cost: \\$(var a)", "cost: $(var a)"),
        ("a\\b\\\\c", "ab\\c"),
        ("trailing\\", "trailing\\"),
        ("$(env NOPE 'it\\'s')", "it's"),
        ("$(env NOPE \\(x\\))", "(x)"),
        ("a$b (c) 'd' \"e\"", "a$b (c) 'd' \"e\""),
        ("$(eval '1 + 2 * 3')", "7"),
        ("$(eval '7 / 2')", "3.5"),
        ('$(eval \'$(var n) > 2 and "$(var a)" == "x"\')', "True"),
        ('$(eval \'"$(var a)" in ("x", "y")\')', "True"),
        ("$(eval '2 ** 3 if $(var n) == 3 else 0')", "8"),
        ("$(eval '7 // 2 + 7 % 2 - -1')", "5"),
        ("$(eval '0 or 5')", "5"),
        ("$(eval '[1, 2]')", "[1, 2]"),
        ("$(not $(var flag))", "false"),
        ("$(not 0)", "true"),
        ("$(and $(var flag) yes)", "true"),
        ("$(or off False)", "false"),
    ],
)
def test_substitutions(ctx, text, expected):
    assert substitute(text, ctx) == expected


def test_dirname_filename_anon(ctx, tmp_path):
    assert substitute("$(dirname)/x.yaml", ctx) == str(tmp_path / "dir" / "x.yaml")
    assert substitute("$(filename)", ctx) == str(tmp_path / "dir" / "f.launch.xml")
    first = substitute("$(anon talker)", ctx)
    assert first.startswith("talker_") and substitute("$(anon talker)", ctx) == first
    assert ctx.configs["anontalker"] == first  # launch keeps it as a launch configuration


@pytest.mark.parametrize(
    "text, message",
    [
        ("$(foo bar)", r"f.launch.xml:7: unknown substitution '\$\(foo \.\.\.\)'"),
        ("$(command ls)", r"runs a shell command"),
        ("$(optenv X)", r"not a ROS 2 launch substitution .* \$\(env NAME ''\)"),
        ("$(var missing)", r"launch configuration 'missing' is not set \(set here: a, flag, n"),
        ("$(env NOPE)", r"environment variable 'NOPE' is not set"),
        ("$(var a", r"unterminated substitution"),
        ("$(var a b c)", r"takes 1 or 2 argument\(s\), got 3"),
        ("$(var  a)", r"expected an argument at column 7"),
        ("$(var a )", r"expected an argument"),
        ("$(env X pre'q')", r"unexpected '''"),
        ("$(env X \\$(var a))", r"unexpected '\('"),
        ("$()", r"expected a substitution name"),
        ("$(not maybe)", r"\$\(not\): 'maybe' is not a boolean"),
        ("$(and 1)", r"takes 2 argument"),
        ("$(find-pkg-share ghost)", r"\$\(find-pkg-share ghost\): package 'ghost' not found"),
        ('$(eval \'__import__("os").system("true")\')', r"function calls are not supported"),
        ("$(eval 'open')", r"name 'open' is not defined"),
        ("$(eval 'true')", r"'true' is not a Python name \(ROS 2 launch fails with NameError\)"),
        ("$(eval '$(var flag) and 1')", r"'true' is not a Python name"),
        ("$(eval 'pi')", r"math's names \('pi'\) are not supported"),
        ("$(eval '().__class__')", r"not Attribute"),
        ("$(eval '[x for x in (1,)]')", r"not ListComp"),
        ("$(eval 'lambda: 1')", r"not Lambda"),
        ("$(eval '9 ** 999')", r"exponent too large"),
        ("$(eval '\"a\" * 100000')", r"result too large"),
        ("$(eval '1 +')", r"not a Python expression"),
        ("$(eval 1 + 2)", r"quote the expression, e.g. \$\(eval '1 \+ 2'\)"),
        ("$(eval '1' 'math')", r"a list of modules to import is not supported"),
        ("$(eval '1 / 0')", r"division by zero"),
    ],
)
def test_refused(ctx, text, message):
    with pytest.raises(LaunchError, match=message):
        substitute(text, ctx)


def test_syntax_errors_are_found_before_evaluation():
    # launch parses a whole file before running it: names and arity are checked at parse time
    with pytest.raises(LaunchError, match="unknown substitution"):
        parse("$(var x) $(nosuch)", Where("f.launch.xml", 1))
    assert parse("$(var never_set)", Where()).parts[0].name == "var"


def test_command_line_split_like_launch(ctx):
    # literal text is split like a shell (quotes group, and are removed); substituted values never
    assert split_command_line("  --a $(var spaced)  b=$(var a)c 'd e' \"f g\"", ctx) == [
        "--a",
        "p q",
        "b=xc",
        "d e",
        "f g",
    ]
    assert split_command_line("pre$(var spaced)post", ctx) == ["prep qpost"]
    assert split_command_line("a\\ b", ctx) == ["a", "b"]  # the backslash is gone before splitting
    assert split_command_line("", ctx) == [""]  # launch's quirk: an empty argument
    assert split_command_line(" $(var a)", ctx) == ["", "x"]
    with pytest.raises(LaunchError, match="No closing quotation"):
        split_command_line("'x y", ctx)
