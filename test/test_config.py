"""The parameter schema: validation, ROS params files, and no declared-but-ignored parameters."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tofc_ros.config import DeviceConfig, ServerConfig, describe, read_params_file

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_valid_and_every_parameter_is_described():
    for cls in (DeviceConfig, ServerConfig):
        cls()
        for info in describe(cls):
            assert len(info.description) > 10, f"{cls.__name__}.{info.name} needs a description"


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"max_rate_hz": -1.0}, "below its minimum"),
        ({"max_rate_hz": float("nan")}, "finite"),
        ({"zstd_level": 23}, "above its maximum"),
        ({"image_format": "h264"}, "not one of"),
        ({"zstd_level": 3.0}, "must be int"),
        ({"zstd_level": True}, "must be int"),
        ({"device": 5}, "must be str"),
        ({"cameras": []}, "non-empty list"),
        ({"cameras": ["a", "a"]}, "twice"),
        ({"max_rate_hz_typo": 1.0}, "unknown parameter"),
    ],
)
def test_bad_values_raise_a_clear_error(values, fragment):
    with pytest.raises(ValueError, match=fragment):
        DeviceConfig.from_mapping(values)


def test_an_integer_is_accepted_for_a_float_parameter():
    assert DeviceConfig.from_mapping({"max_rate_hz": 2}).max_rate_hz == 2.0


def test_params_file_sections_merge_by_specificity(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "/**:\n  ros__parameters:\n    a: 1\n    b: 1\n"
        "node:\n  ros__parameters:\n    b: 2\n    nested: {x: 3}\n"
        "/robot1/node:\n  ros__parameters:\n    a: 4\n"
    )
    assert read_params_file(path, "node") == {"a": 1, "b": 2, "nested.x": 3}
    assert read_params_file(path, "node", "/robot1") == {"a": 4, "b": 2, "nested.x": 3}
    assert read_params_file(path, "other") == {"a": 1, "b": 1}
    path.write_text("node: {b: 2}\n")
    with pytest.raises(ValueError, match="ros__parameters"):
        read_params_file(path, "node")


@pytest.mark.parametrize("cls, name", [(DeviceConfig, "device"), (ServerConfig, "server")])
def test_shipped_config_files_name_every_parameter_and_validate(cls, name):
    values = read_params_file(ROOT / "config" / f"{name}.yaml", f"{name}_node")
    assert set(values) == {f.name for f in dataclasses.fields(cls)}, "config file and schema disagree"
    # The overlay files (config/*_easyvqa.yaml, device_adaptive.yaml) say "everything not named here keeps its
    # default, the same values as this file": hold the shipped file to the schema's defaults.
    assert dataclasses.asdict(cls.from_mapping(values)) == dataclasses.asdict(cls()), "config file and defaults differ"
