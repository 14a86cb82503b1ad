"""XML and YAML launch files resolved into plans (nothing is started here)."""

import os
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent / "launcher_fixtures"))
from tofc_ros.launcher import LaunchError, load_launch_description

import launcher_testkit as kit


@pytest.fixture
def prefix(tmp_path):
    return kit.make_prefix(tmp_path)


@pytest.fixture
def env(prefix):
    return kit.environ(prefix)


def share(prefix, name):
    return str(prefix / "share" / "demo" / name)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def load(path, env, **args):
    return load_launch_description(path, args, environ=env)


def params_of(plan, proc):
    """Temporary params files of one process, read back, in command-line order."""
    return [yaml.safe_load(open(f)) for f in proc.node.param_files if f.startswith(plan.temp_dir or "\0")]


def normalized(plan):
    """Command lines with temporary params files replaced by their contents (for comparisons)."""
    out = []
    for p in plan.processes:
        cmd = []
        for word in p.cmd:
            if plan.temp_dir and word.startswith(plan.temp_dir):
                with open(word) as f:
                    cmd.append(yaml.safe_load(f))
            else:
                cmd.append(word)
        out.append((p.name, cmd, p.on_exit_shutdown, p.env.get("TOFC_MODE")))
    return out


def test_xml_plan_has_launch_ros_command_lines(prefix, env):
    with load(share(prefix, "full.launch.xml"), env) as plan:
        device, server, helper = plan.processes
        exe = str(prefix / "lib" / "demo" / "sleeper")
        tmp = device.node.param_files[1:]
        assert device.cmd == [
            exe,
            "--ros-args",
            "-r",
            "__node:=device",
            "-r",
            "__ns:=/robot1",
            "--params-file",
            share(prefix, "config/device.yaml"),
            "--params-file",
            tmp[0],
            "--params-file",
            tmp[1],
            "--params-file",
            tmp[2],
            "-r",
            "image:=/robot1/camera/image_raw",
        ]
        assert params_of(plan, device) == [
            {"/robot1/device": {"ros__parameters": {"rate": 2.5}}},
            {"/robot1/device": {"ros__parameters": {"sizes": [1, 2, 3]}}},
            {"/robot1/device": {"ros__parameters": {"label": "cam_robot1"}}},
        ]
        assert device.node.inline_params == {"rate": 2.5, "sizes": [1, 2, 3], "label": "cam_robot1"}
        assert device.node.fully_qualified_name == "/robot1/device"
        assert device.env["TOFC_MODE"] == "test" and not device.on_exit_shutdown
        assert server.cmd == [exe, "--verbose", "--ros-args", "-r", "__node:=server", "-r", "__ns:=/srv"]
        assert server.on_exit_shutdown
        # the group ended, so the included node is not under /robot1
        assert helper.cmd[1:] == ["--ros-args", "-r", "__node:=helper", "-r", "__ns:=/aux"]
        assert plan.labels() == ["sleeper-1", "sleeper-2", "quick-3"]
        assert [a.name for a in plan.arguments] == ["ns", "rate", "use_server"]
        temp_dir = plan.temp_dir
        assert os.path.isdir(temp_dir)
    assert not os.path.exists(temp_dir)  # leaving the with block deleted the temporary files


def test_yaml_frontend_gives_the_same_plan_as_xml(prefix, env):
    with (
        load(share(prefix, "full.launch.xml"), env, ns="r2") as xml_plan,
        load(share(prefix, "full.launch.yaml"), env, ns="r2") as yaml_plan,
    ):
        assert normalized(yaml_plan) == normalized(xml_plan)
        assert "__ns:=/r2" in xml_plan.processes[0].cmd


def test_argument_overrides_and_typing(prefix, env):
    with load(share(prefix, "full.launch.xml"), env, ns="r7", rate="10", use_server="false") as plan:
        assert [p.node.name for p in plan.processes] == ["device", "helper"]
        assert params_of(plan, plan.processes[0])[0] == {"/r7/device": {"ros__parameters": {"rate": 10}}}
        assert plan.configurations["ns"] == "r7"


def test_missing_required_arguments_are_all_listed(tmp_path, env):
    path = write(
        tmp_path,
        "req.launch.xml",
        """<launch>
      <arg name="model" description="model directory"/>
      <arg name="camera"/>
      <arg name="ok" default="1"/>
    </launch>""",
    )
    with pytest.raises(LaunchError) as e:
        load(path, env)
    message = str(e.value)
    assert "'model' (model directory)" in message and "'camera'" in message
    assert "model:=<value>" in message and "'ok'" not in message
    load(path, env, model="m", camera="c").cleanup()


def test_include_without_its_required_argument(tmp_path, prefix, env):
    # As launch does, before running anything: the include itself must pass the argument...
    path = write(
        tmp_path, "inc.launch.xml", f'<launch>\n<include file="{share(prefix, "child.launch.xml")}"/></launch>'
    )
    with pytest.raises(LaunchError) as e:
        load(path, env)
    assert "inc.launch.xml:2: <include>: the included file needs argument 'child_name'" in str(e.value)
    assert "child.launch.xml:2" in str(e.value)
    # ... even when the configuration is already set (launch does not look at it)
    path = write(
        tmp_path,
        "let.launch.xml",
        """<launch>
      <let name="child_name" value="x"/>
      <include file="$(dirname)/prefix/share/demo/child.launch.xml"/></launch>""",
    )
    with pytest.raises(
        LaunchError,
        match=r"let.launch.xml:3: <include>: child.launch.xml needs "
        r"argument\(s\) 'child_name'",
    ):
        load(path, env)


def test_include_is_not_a_scope_but_a_group_around_it_is(tmp_path, prefix, env):
    # As in ROS 2 launch: an include's args (and what the included file declares) stay set after it.
    child = share(prefix, "child.launch.xml")
    leaky = write(
        tmp_path,
        "leaky.launch.xml",
        f'''<launch>
      <include file="{child}"><arg name="child_name" value="a"/></include>
      <node pkg="demo" exec="quick" name="$(var child_name)_$(var child_ns)"/>
    </launch>''',
    )
    with load(leaky, env) as plan:
        assert plan.processes[1].node.name == "a_aux"
    scoped = write(
        tmp_path,
        "scoped.launch.xml",
        f'''<launch>
      <group><include file="{child}"><arg name="child_name" value="a"/></include></group>
      <node pkg="demo" exec="quick" name="$(var child_name)"/>
    </launch>''',
    )
    with pytest.raises(LaunchError, match=r"scoped.launch.xml:3: .*'child_name' is not set"):
        load(scoped, env)


def test_groups_scope_configurations_and_namespaces(tmp_path, env):
    path = write(
        tmp_path,
        "groups.launch.xml",
        """<launch>
      <group>
        <push_ros_namespace namespace="a"/>
        <let name="inner" value="1"/>
        <group>
          <push-ros-namespace namespace="b"/>
          <node pkg="demo" exec="quick" name="n1"/>
          <node pkg="demo" exec="quick" name="n2" namespace="c"/>
          <node pkg="demo" exec="quick" name="n3" namespace="/abs"/>
        </group>
        <node pkg="demo" exec="quick" name="n4"/>
        <group>
          <push-ros-namespace namespace="/reset"/>
          <node pkg="demo" exec="quick" name="n5"/>
        </group>
      </group>
      <group scoped="false">
        <let name="outer" value="2"/>
        <push-ros-namespace namespace="leaked"/>
      </group>
      <node pkg="demo" exec="quick" name="n6" args="$(var outer)"/>
    </launch>""",
    )
    with load(path, env) as plan:
        assert [p.node.fully_qualified_name for p in plan.processes] == [
            "/a/b/n1",
            "/a/b/c/n2",
            "/abs/n3",
            "/a/n4",
            "/reset/n5",
            "/leaked/n6",
        ]
        assert "inner" not in plan.configurations and plan.configurations["outer"] == "2"
        assert plan.processes[-1].cmd[1] == "2"


def test_no_name_or_namespace_gives_wildcard_params(tmp_path, env):
    path = write(
        tmp_path,
        "anon.launch.xml",
        """<launch>
      <node pkg="demo" exec="quick"><param name="a" value="x"/></node>
      <node pkg="demo" exec="quick" name="named"><param name="a" value="y"/></node>
    </launch>""",
    )
    with load(path, env) as plan:
        unnamed, named = plan.processes
        assert unnamed.cmd[1:3] == ["--ros-args", "--params-file"]
        # launch_ros keys by the full name only when both name and namespace are known
        assert params_of(plan, unnamed) == [{"/**": {"ros__parameters": {"a": "x"}}}]
        assert params_of(plan, named) == [{"/**": {"ros__parameters": {"a": "y"}}}]
        assert "-r" in named.cmd and "__ns:=/" not in " ".join(named.cmd)


@pytest.mark.parametrize(
    "text, value",
    [
        ("true", True),
        ("False", False),
        ("3", 3),
        ("-1.5", -1.5),
        ("1.5e+3", 1500.0),
        ("1e3", "1e3"),  # YAML 1.1 (PyYAML, as launch_ros uses): no '.', so a string
        ("abc", "abc"),
        ("'3'", "3"),
        ("[a, b]", ["a", "b"]),
        ("[1.0, 2.5]", [1.0, 2.5]),
        ("/tmp/x", "/tmp/x"),
    ],
)
def test_inline_param_values_are_typed_like_ros(tmp_path, env, text, value):
    path = write(
        tmp_path,
        "p.launch.xml",
        f'<launch><node pkg="demo" exec="quick"><param name="v" value="{text}"/></node></launch>',
    )
    with load(path, env) as plan:
        assert plan.processes[0].node.inline_params == {"v": value}
        assert type(plan.processes[0].node.inline_params["v"]) is type(value)


@pytest.mark.parametrize("text", ["[1, a]", "{a: 1}", "~", "2024-01-01"])
def test_bad_param_values_are_refused(tmp_path, env, text):
    path = write(
        tmp_path,
        "p.launch.xml",
        f'<launch><node pkg="demo" exec="quick">\n<param name="v" value="{text}"/></node></launch>',
    )
    with pytest.raises(LaunchError, match=r"p.launch.xml:2: <param name=.v.>"):
        load(path, env)


def test_nested_params_and_yaml_typed_values(tmp_path, env):
    xml = write(
        tmp_path,
        "n.launch.xml",
        """<launch><node pkg="demo" exec="quick" name="n">
      <param name="qos"><param name="depth" value="1"/><param name="reliable" value="true"/></param>
    </node></launch>""",
    )
    with load(xml, env) as plan:
        assert plan.processes[0].node.inline_params == {"qos.depth": 1, "qos.reliable": True}
        assert params_of(plan, plan.processes[0]) == [  # flattened, as launch_ros writes them
            {"/**": {"ros__parameters": {"qos.depth": 1, "qos.reliable": True}}}
        ]
    yml = write(
        tmp_path,
        "n.launch.yaml",
        """launch:
    - node:
        pkg: demo
        exec: quick
        param:
        - {name: n, value: 7}
        - {name: flag, value: false}
        - {name: names, value: [a, $(env HOME)]}
    """,
    )
    with load(yml, env) as plan:
        assert plan.processes[0].node.inline_params == {"n": 7, "flag": False, "names": ["a", env["HOME"]]}


def test_param_file_must_exist(tmp_path, env):
    path = write(
        tmp_path,
        "f.launch.xml",
        '<launch><node pkg="demo" exec="quick">\n<param from="$(dirname)/nope.yaml"/></node></launch>',
    )
    with pytest.raises(LaunchError, match=r"f.launch.xml:2: <param>: parameter file .*nope.yaml"):
        load(path, env)


def test_conditions(tmp_path, env):
    path = write(
        tmp_path,
        "c.launch.xml",
        """<launch>
      <arg name="flag" default="true"/>
      <node pkg="demo" exec="quick" name="a" if="$(var flag)"/>
      <node pkg="demo" exec="quick" name="b" unless="$(var flag)"/>
      <node pkg="demo" exec="quick" name="c" if="1"/>
      <group if="0"><node pkg="demo" exec="quick" name="d"/></group>
      <let name="x" value="set" unless="False"/>
      <node pkg="demo" exec="quick" name="e" if="$(eval &quot;'$(var x)' == 'set'&quot;)"/>
    </launch>""",
    )
    with load(path, env) as plan:
        assert [p.node.name for p in plan.processes] == ["a", "c", "e"]
    with load(path, env, flag="FALSE") as plan:
        assert [p.node.name for p in plan.processes] == ["b", "c", "e"]
    with pytest.raises(LaunchError, match=r"c.launch.xml:3: condition evaluated to 'maybe'"):
        load(path, env, flag="maybe")


def test_environment_set_and_read(tmp_path, env):
    path = write(
        tmp_path,
        "e.launch.xml",
        """<launch>
      <set_env name="A" value="1"/>
      <set_env name="B" value="$(env A)-$(env NOT_SET_ANYWHERE fallback)-$(env NOPE '')"/>
      <group><set_env name="C" value="inner"/><unset_env name="HOME"/>
        <node pkg="demo" exec="quick" name="in"><env name="D" value="node"/></node></group>
      <node pkg="demo" exec="quick" name="out"/>
    </launch>""",
    )
    with load(path, env) as plan:
        inner, outer = plan.processes
        assert inner.env["B"] == "1-fallback-" and inner.env["C"] == "inner"
        assert inner.env["D"] == "node" and "HOME" not in inner.env
        assert "C" not in outer.env and "D" not in outer.env and outer.env["HOME"] == env["HOME"]


def test_executable_and_args_splitting(tmp_path, env):
    path = write(
        tmp_path,
        "x.launch.xml",
        """<launch>
      <let name="spaced" value="a b"/>
      <executable cmd="echo  one $(var spaced) 'two words'" name="echoer" cwd="$(dirname)"
                  on_exit="shutdown"/>
      <node pkg="demo" exec="quick" args="--x=$(var spaced) y" ros_args="--log-level debug"/>
    </launch>""",
    )
    with load(path, env) as plan:
        echo, node = plan.processes
        assert echo.cmd == ["echo", "one", "a b", "two words"] and echo.name == "echoer"
        assert echo.cwd == str(tmp_path) and echo.on_exit_shutdown and echo.node is None
        assert node.cmd[1:] == ["--x=a b", "y", "--ros-args", "--log-level", "debug", "--ros-args"]


def test_choices(tmp_path, env):
    path = write(
        tmp_path,
        "ch.launch.xml",
        """<launch>
      <arg name="mode" default="tofc"><choice value="tofc"/><choice value="raw"/></arg>
    </launch>""",
    )
    load(path, env, mode="raw").cleanup()
    with pytest.raises(LaunchError, match=r"'mode' is 'jpeg'; must be one of \['tofc', 'raw'\]"):
        load(path, env, mode="jpeg")


@pytest.mark.parametrize(
    "body, message",
    [
        ('<timer period="1"/>', r"ch.launch.xml:2: <timer>: not supported by this runner"),
        ('<set-env name="A" value="1"/>', r"<set-env>: not a ROS 2 launch tag .* write <set_env>"),
        (
            '<node pkg="demo" exec="quick" respawn="true"/>',
            r"ch.launch.xml:2: <node>: attribute 'respawn' is not supported by this runner",
        ),
        (
            '<node pkg="demo" exec="quick" colour="red"/>',
            r"<node>: unknown attribute 'colour' \(ROS 2 launch refuses it too",
        ),
        ('<executable cmd="ls" args="-l"/>', r"<executable>: unknown attribute 'args'.*cmd="),
        (
            '<node pkg="demo" exec="quick"><remap from="a"/></node>',
            r"ch.launch.xml:2: <remap>: missing required attribute 'to'",
        ),
        ('<node pkg="demo" exec="quick"><foo/></node>', r"<foo>: not allowed inside <node>"),
        ('<node pkg="demo" exec="quick" on_exit="restart"/>', r"on_exit='restart': only the literal"),
        ('<node pkg="demo" exec="missing"/>', r"executable 'missing' of package 'demo' not found"),
        ('<node pkg="nopkg" exec="quick"/>', r"executable 'quick' of package 'nopkg' not found"),
        ('<node pkg="demo" exec="quick" name="bad-name"/>', r"invalid node name 'bad-name'"),
        ('<node pkg="demo" exec="quick" namespace="1x"/>', r"invalid namespace '/1x'"),
        ('<include file="/does/not/exist.launch.xml"/>', r"<include>: file .* does not exist"),
        (
            '<group if="false"><node pkg="demo" exec="quick" args="$(nope)"/></group>',
            r"ch.launch.xml:2: unknown substitution",
        ),  # the whole file is read first, as in launch
        ('<node pkg="demo" exec="quick" if="1" unless="0"/>', r"'if' and 'unless' cannot both"),
    ],
)
def test_unsupported_or_bad_input_is_refused_with_location(tmp_path, env, body, message):
    path = write(tmp_path, "ch.launch.xml", f"<launch>\n{body}\n</launch>")
    with pytest.raises(LaunchError, match=message):
        load(path, env)


def test_malformed_files(tmp_path, env):
    with pytest.raises(LaunchError, match=r"bad.launch.xml:3: malformed XML"):
        load(write(tmp_path, "bad.launch.xml", "<launch>\n<node>\n</launch>"), env)
    with pytest.raises(LaunchError, match="root element must be <launch>"):
        load(write(tmp_path, "root.launch.xml", "<group/>"), env)
    with pytest.raises(LaunchError, match="single key 'launch'"):
        load(write(tmp_path, "bad.launch.yaml", "nodes: []"), env)
    with pytest.raises(LaunchError, match="Python launch files are not supported"):
        load(write(tmp_path, "x.launch.py", ""), env)


def test_find_pkg_share_falls_back_to_sys_prefix(tmp_path, prefix, monkeypatch):
    path = write(tmp_path, "s.launch.xml", '<launch><let name="s" value="$(find-pkg-share demo)"/></launch>')
    no_ament = {k: v for k, v in os.environ.items() if k != "AMENT_PREFIX_PATH"}
    with pytest.raises(LaunchError, match=r"package 'demo' not found .* sys.prefix"):
        load(path, no_ament)
    monkeypatch.setattr(sys, "prefix", str(prefix))
    with load(path, no_ament) as plan:
        assert plan.configurations["s"] == str(prefix / "share" / "demo")


def test_first_prefix_with_the_package_wins(tmp_path, prefix):
    other = kit.make_prefix(tmp_path / "other")
    path = write(
        tmp_path,
        "o.launch.xml",
        '<launch><node pkg="demo" exec="quick"/><let name="s" value="$(find-pkg-share demo)"/></launch>',
    )
    env = kit.environ(prefix, AMENT_PREFIX_PATH=f"{other}{os.pathsep}{prefix}")
    with load(path, env) as plan:
        assert plan.processes[0].cmd[0] == str(other / "lib" / "demo" / "quick")
        assert plan.configurations["s"] == str(other / "share" / "demo")


def test_yaml_attributes_must_be_text_as_in_launch(tmp_path, env):
    path = write(
        tmp_path,
        "t.launch.yaml",
        """launch:
    - arg: {name: n, default: "3"}
    - group:
        scoped: false
        children:
        - let: {name: leaked, value: "1"}
    - node: {pkg: demo, exec: quick, name: a, if: "true", args: --n $(var n) $(var leaked)}
    - node: {pkg: demo, exec: quick, name: b, if: "false"}
    """,
    )
    with load(path, env) as plan:
        assert [p.node.name for p in plan.processes] == ["a"]
        assert plan.processes[0].cmd[1:4] == ["--n", "3", "1"]
    bad = write(tmp_path, "b.launch.yaml", "launch:\n- arg: {name: n, default: 3}\n")
    with pytest.raises(
        LaunchError,
        match=r"b.launch.yaml:2: <arg>: attribute 'default' must be "
        r"text, got YAML int 3; quote it",
    ):
        load(bad, env)


def test_the_launcher_never_imports_rclpy():
    import subprocess

    code = (
        "import sys, tofc_ros.launcher, tofc_ros.launcher.cli; "
        'sys.exit(any(m.split(".")[0] in ("rclpy", "launch", "launch_ros") for m in sys.modules))'
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=kit.REPO).returncode == 0
