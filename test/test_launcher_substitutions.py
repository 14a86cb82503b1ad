"""``$(...)`` parsing and evaluation, including the restricted ``$(eval)``."""

import pytest

from tofc_ros.launcher import LaunchError
from tofc_ros.launcher.substitutions import Context, split_command_line, substitute


@pytest.fixture
def ctx(tmp_path):
    return Context({'a': 'x', 'n': '3', 'flag': 'true', 'spaced': 'p q'},
                   {'B': 'bee', 'AMENT_PREFIX_PATH': str(tmp_path / 'none')},
                   str(tmp_path / 'dir' / 'f.launch.xml'), line=7)


@pytest.mark.parametrize('text, expected', [
    ('plain', 'plain'),
    ('$(var a)/$(env B)', 'x/bee'),
    ('pre-$(var a)-post', 'pre-x-post'),
    ('$(env NOPE dflt)', 'dflt'),
    ("$(env NOPE 'two words')", 'two words'),
    ('$(env NOPE $(var a))', 'x'),
    ('$(optenv NOPE)', ''),
    ('$(optenv B other)', 'bee'),
    ('cost: \\$(var a)', 'cost: $(var a)'),
    ('a$b', 'a$b'),
    ("$(eval '1 + 2 * 3')", '7'),
    ("$(eval '$(var n) > 2 and \"$(var a)\" == \"x\"')", 'True'),
    ("$(eval '$(var flag) and not false')", 'True'),
    ("$(eval '\"$(var a)\" in (\"x\", \"y\")')", 'True'),
    ("$(eval '2 ** 3 if $(var n) == 3 else 0')", '8'),
    ("$(eval '7 // 2 + 7 % 2 - -1')", '5'),
])
def test_substitutions(ctx, text, expected):
    assert substitute(text, ctx) == expected


def test_dirname_filename_anon(ctx, tmp_path):
    assert substitute('$(dirname)/x.yaml', ctx) == str(tmp_path / 'dir' / 'x.yaml')
    assert substitute('$(filename)', ctx) == str(tmp_path / 'dir' / 'f.launch.xml')
    first = substitute('$(anon talker)', ctx)
    assert first.startswith('talker_') and substitute('$(anon talker)', ctx) == first


@pytest.mark.parametrize('text, message', [
    ('$(foo bar)', r"f.launch.xml:7: unsupported substitution '\$\(foo \.\.\.\)'"),
    ('$(command ls)', r'runs a shell command'),
    ('$(var missing)', r"launch configuration 'missing' is not set \(set here: a, flag, n"),
    ('$(env NOPE)', r"environment variable 'NOPE' is not set"),
    ('$(var a', r'unterminated substitution'),
    ('$(var a b)', r'takes 1 argument\(s\), got 2'),
    ('$()', r'substitution without a name'),
    ('$(find-pkg-share ghost)', r"\$\(find-pkg-share ghost\): package 'ghost' not found"),
    ("$(eval '__import__(\"os\").system(\"true\")')", r'not Call'),
    ("$(eval 'open')", r'not Name'),
    ("$(eval '().__class__')", r'not Attribute'),
    ("$(eval '[x for x in (1,)]')", r'not ListComp'),
    ("$(eval 'lambda: 1')", r'not Lambda'),
    ("$(eval '9 ** 999')", r'exponent too large'),
    ("$(eval '\"a\" * 100000')", r'result too large'),
    ("$(eval '1 +')", r'cannot parse'),
    ('$(eval 1 + 2)', r"quote the expression, e.g. \$\(eval '1 \+ 2'\)"),
    ("$(eval '1 / 0')", r'division by zero'),
])
def test_refused(ctx, text, message):
    with pytest.raises(LaunchError, match=message):
        substitute(text, ctx)


def test_command_line_split_keeps_substituted_values_whole(ctx):
    assert split_command_line('  --a $(var spaced)  b=$(var a)c ', ctx) == ['--a', 'p q', 'b=xc']
    assert split_command_line('', ctx) == []
