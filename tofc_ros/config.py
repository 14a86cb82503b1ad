"""The one parameter schema of every node: frozen dataclasses with types, ranges, choices and descriptions.

Pure Python (no rclpy) so configurations can be validated, documented and tested without ROS. The node layer
(`tofc_ros.nodes.parameters`) turns each field into a declared ROS parameter with a ParameterDescriptor
(description, integer/floating-point range, read-only), and builds the dataclass from the declared values,
which validates everything once more in `__post_init__`.

Parameter files are ordinary ROS 2 params files (`/**: {ros__parameters: {...}}` or keyed by node name), so the
same config/*.yaml works with `ros2 launch`, `ros2 run --ros-args --params-file` and our launcher.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

_RELIABILITY = ("reliable", "best_effort")
_CODECS = ("tofc", "alignedvq", "fp16", "fp16-zstd", "quant-zstd", "jpeg", "webp", "rgb8", "placeholder-zstd")
_DTYPES = ("fp32", "bf16", "fp16")
_DEFAULT_MODEL = "package://tofc_ros/models/scenes-tiny-ov"
_DEFAULT_CODEC = "package://tofc_ros/models/scenes-tiny-ov/tofc_codec.safetensors"
_DEFAULT_POINTS = "package://tofc_ros/models/scenes-tiny-ov/operating_points.safetensors"


def param(
    default: Any,
    description: str,
    *,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A dataclass field carrying the ROS parameter's description and constraints."""
    if low is not None and high is not None and low > high:
        raise ValueError(f"param range [{low}, {high}] is empty")
    return dataclasses.field(
        default=default, metadata={"description": description, "low": low, "high": high, "choices": choices}
    )


@dataclasses.dataclass(frozen=True)
class ParamInfo:
    """Everything the node layer needs to declare one parameter."""

    name: str
    default: Any
    type: type
    description: str
    low: float | None
    high: float | None
    choices: tuple[str, ...] | None


class _Validated:
    """Mixin: type, range and choice checks for every field, run on construction."""

    def __post_init__(self) -> None:
        for info in describe(type(self)):
            _check(info, getattr(self, info.name))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]):
        """Build from a mapping of parameter values; unknown names are an error (typos must not pass silently)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown parameter(s) {unknown}; known: {sorted(known)}")
        coerced = {}
        for info in describe(cls):
            if info.name in values:
                coerced[info.name] = _coerce(info, values[info.name])
        return cls(**coerced)


def describe(cls) -> list[ParamInfo]:
    """The schema of a config dataclass as ParamInfo records, in declaration order."""
    out = []
    for f in dataclasses.fields(cls):
        md = f.metadata
        out.append(
            ParamInfo(
                name=f.name,
                default=f.default,
                type=type(f.default),
                description=md.get("description", ""),
                low=md.get("low"),
                high=md.get("high"),
                choices=md.get("choices"),
            )
        )
    return out


def _coerce(info: ParamInfo, value: Any) -> Any:
    # YAML writes 2 for 2.0; a float parameter accepts an int, nothing else is converted.
    if info.type is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if info.type is tuple and isinstance(value, (list, tuple)):
        return tuple(value)
    return value


def _check(info: ParamInfo, value: Any) -> None:
    expected = info.type
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if expected is tuple:
        if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"parameter '{info.name}' must be a non-empty list of non-empty strings, got {value!r}")
        if len(set(value)) != len(value):
            raise ValueError(f"parameter '{info.name}' lists a name twice: {list(value)}")
        return
    if type(value) is not expected:
        raise ValueError(f"parameter '{info.name}' must be {expected.__name__}, got {type(value).__name__} {value!r}")
    if expected is float and not math.isfinite(value):
        raise ValueError(f"parameter '{info.name}' must be finite, got {value!r}")
    if info.low is not None and value < info.low:
        raise ValueError(f"parameter '{info.name}' = {value!r} is below its minimum {info.low} ({info.description})")
    if info.high is not None and value > info.high:
        raise ValueError(f"parameter '{info.name}' = {value!r} is above its maximum {info.high} ({info.description})")
    if info.choices is not None and value not in info.choices:
        raise ValueError(f"parameter '{info.name}' = {value!r} is not one of {list(info.choices)}")


@dataclasses.dataclass(frozen=True)
class DeviceConfig(_Validated):
    """Parameters of the device (robot) node."""

    cameras: tuple = param(
        ("front",),
        "Camera ids, each carried in its CompressedFeatures; one camera subscribes to `image`, several "
        "to `<camera>/image` (remap them)",
    )
    mode: str = param(
        "continuous",
        "'continuous': encode each camera's newest frame at most max_rate_hz times a second; "
        "'on_demand': encode only the frame nearest a question's image_stamp (questions arrive on `questions`); "
        "'adaptive': per frame the richest operating point of `operating_points` that fits latency_budget_ms, "
        "continuous while questions are frequent, on demand otherwise (answers arrive on `answers`)",
        choices=("continuous", "on_demand", "adaptive"),
    )
    on_demand_history: int = param(10, "On-demand mode: recent frames kept per camera to choose from", low=1, high=1000)
    stamp_tolerance_s: float = param(
        0.05,
        "On-demand mode: largest gap between a question's image_stamp and the frame encoded for it",
        low=0.0,
        high=3600.0,
    )
    image_format: str = param(
        "raw",
        "Camera message type: 'raw' = sensor_msgs/Image, 'compressed' = sensor_msgs/CompressedImage (JPEG/PNG)",
        choices=("raw", "compressed"),
    )
    max_rate_hz: float = param(
        2.0,
        "Continuous mode: most feature messages per second and camera (the newest frame is encoded)",
        low=0.01,
        high=240.0,
    )
    frame_stride: int = param(1, "Consider only every Nth received frame", low=1, high=10_000)
    codec: str = param(
        "tofc",
        "Payload: 'tofc' (learned codec, codec_path), 'alignedvq' (codebook indices of the hidden state inside the "
        "vision tower, alignedvq_path; the split layer is the codec's), feature baselines 'fp16', 'fp16-zstd', "
        "'quant-zstd', image "
        "baselines 'jpeg', 'webp', 'rgb8' (raw pixels; the server runs the vision tower), or 'placeholder-zstd' "
        "(zstd pixels, answered without a model)",
        choices=_CODECS,
    )
    model_path: str = param(
        _DEFAULT_MODEL,
        "LLaVA checkpoint (llava-hf layout): a path or package://<pkg>/<path>; only its vision tower is loaded",
    )
    codec_path: str = param(_DEFAULT_CODEC, "TOFC codec weights (.safetensors) for codec 'tofc'")
    alignedvq_path: str = param(
        "", "AlignedVQ codebooks (.safetensors) for codec 'alignedvq' (they name the split layer the device runs to)"
    )
    operating_points: str = param(
        _DEFAULT_POINTS, "Adaptive mode: operating-point bundle (.safetensors, richest point first)"
    )
    latency_budget_ms: float = param(
        1000.0,
        "Adaptive mode: answer latency the chosen point must fit (device + uplink + server)",
        low=1.0,
        high=3_600_000.0,
    )
    adapt_up_margin: float = param(
        0.2, "Adaptive mode: a richer point must fit the budget with this fraction to spare", low=0.0, high=0.95
    )
    adapt_up_hold: int = param(
        3, "Adaptive mode: decisions a richer point must fit before it is taken", low=1, high=1000
    )
    speculate_on_hz: float = param(
        0.5, "Adaptive mode: encode continuously from this question rate (questions/s) up", low=0.0, high=1000.0
    )
    speculate_off_hz: float = param(
        0.2, "Adaptive mode: back to on-demand encoding below this question rate", low=0.0, high=1000.0
    )
    question_rate_window_s: float = param(
        10.0, "Adaptive mode: the question rate is counted over this window", low=0.1, high=3600.0
    )
    burst_memory_s: float = param(
        60.0,
        "Adaptive mode: the server's queue is predicted at the highest question rate of this long a past (a frame "
        "sent in a quiet spell must survive the next burst)",
        low=0.1,
        high=86_400.0,
    )
    link_prior_mbps: float = param(
        10.0, "Adaptive mode: uplink rate assumed before any answer", low=0.001, high=100_000.0
    )
    link_prior_delay_ms: float = param(
        20.0, "Adaptive mode: one-way uplink delay assumed at first", low=0.0, high=60_000.0
    )
    link_window: int = param(5, "Adaptive mode: recent transfers the rate estimate is the median of", low=1, high=1000)
    loss_after_s: float = param(
        1.0,
        "Adaptive mode: an awaited frame unanswered for 3x its predicted transfer + server time, and at least this "
        "long, counts as lost (the link estimate drops)",
        low=0.01,
        high=3600.0,
    )
    answers_qos_reliability: str = param(
        "reliable", "Adaptive mode: answers subscription reliability", choices=_RELIABILITY
    )
    answers_qos_depth: int = param(100, "Adaptive mode: answers subscription depth", low=1, high=100_000)
    n_clusters: int = param(
        16, "Merged features per tile (DPC-KNN n_c); 0 sends every token unmerged", low=0, high=4096
    )
    dpc_k: int = param(5, "DPC-KNN neighbours K for the local density", low=1, high=64)
    debug_image: bool = param(
        False,
        "Publish `debug/image`: the frame with every patch tinted by its DPC-KNN cluster and the centres marked "
        "(feature codecs with merging; one render per published frame)",
    )
    quant_bits: int = param(8, "Bits per value of the 'quant-zstd' baseline", low=1, high=16)
    image_quality: int = param(85, "Quality of the 'jpeg' and 'webp' baselines", low=1, high=100)
    zstd_level: int = param(3, "zstd level of the 'fp16-zstd', 'quant-zstd' and placeholder codecs", low=1, high=22)
    device: str = param("cpu", "Torch device of the vision tower and codec ('cpu', 'cuda', 'cuda:1')")
    dtype: str = param("fp32", "Vision tower precision", choices=_DTYPES)
    max_image_pixels: int = param(
        33_554_432,
        "Largest accepted image (width x height); larger frames are refused, not allocated",
        low=1,
        high=1 << 30,
    )
    image_qos_reliability: str = param(
        "best_effort", "Camera subscription reliability (sensor data QoS, REP-2003)", choices=_RELIABILITY
    )
    image_qos_depth: int = param(1, "Camera subscription depth: 1 keeps only the newest frame", low=1, high=1000)
    features_qos_reliability: str = param("reliable", "Features publisher reliability", choices=_RELIABILITY)
    features_qos_depth: int = param(10, "Features publisher depth", low=1, high=1000)
    questions_qos_reliability: str = param(
        "reliable", "On-demand mode: questions subscription reliability", choices=_RELIABILITY
    )
    questions_qos_depth: int = param(100, "On-demand mode: questions subscription depth", low=1, high=100_000)
    two_stage: bool = param(
        False,
        "Two-stage answering: serve the server's refine_requests with a crop of the frame at full detail (keeps "
        "on_demand_history recent frames and the DPC-KNN assignment of each frame sent)",
    )
    refine_max_area: float = param(
        0.1,
        "Two-stage: largest crop, as a fraction of the frame's area (a request may ask for less)",
        low=0.001,
        high=1.0,
    )
    refine_n_clusters: int = param(
        16,
        "Two-stage: merged features per tile of a crop (a request may ask for others; 0: every token)",
        low=0,
        high=4096,
    )
    diagnostics_period_s: float = param(1.0, "Period of /diagnostics status messages", low=0.05, high=3600.0)


@dataclasses.dataclass(frozen=True)
class ServerConfig(_Validated):
    """Parameters of the server (edge) node."""

    default_camera: str = param("front", "Camera used when a question leaves `camera` empty")
    answerer: str = param(
        "model",
        "'model': decode and answer with the LLaVA server half; 'placeholder': describe "
        "placeholder-zstd frames without any model",
        choices=("model", "placeholder"),
    )
    model_path: str = param(
        _DEFAULT_MODEL,
        "LLaVA checkpoint (llava-hf layout): a path or package://<pkg>/<path>; "
        "the vision tower is loaded only with load_vision",
    )
    codec_path: str = param(_DEFAULT_CODEC, "TOFC codec weights accepted (empty: feature/image baselines only)")
    alignedvq_path: str = param(
        "", "AlignedVQ codebooks accepted (empty: none); the server then also runs the vision layers after its split"
    )
    operating_points: str = param(
        "", "Operating-point bundle of adaptive devices (.safetensors): its learned codecs are accepted too"
    )
    load_vision: bool = param(False, "Also load the vision tower, to answer JPEG/WebP image payloads")
    max_new_tokens: int = param(16, "Longest answer in tokens", low=1, high=4096)
    device: str = param("cpu", "Torch device of the model ('cpu', 'cuda', 'cuda:1')")
    dtype: str = param("fp32", "Model precision", choices=_DTYPES)
    stamp_tolerance_s: float = param(
        0.0,
        "Largest gap between a question's image_stamp and a cached frame's stamp that still pairs them "
        "(0: exact; on-demand devices need about one frame period)",
        low=0.0,
        high=3600.0,
    )
    cache_size: int = param(30, "Feature messages kept per camera (the newest ones)", low=1, high=100_000)
    max_cameras: int = param(
        64, "Most cameras tracked at once; features from further cameras are refused", low=1, high=10_000
    )
    default_timeout_s: float = param(
        5.0,
        "Timeout of a question (or goal) that sets none: how long it may wait for its frame (then NO_FRAME), in the "
        "queue and generating (then TIMEOUT, with the answer so far)",
        low=0.0,
        high=3600.0,
    )
    queue_size: int = param(8, "Questions waiting to be answered; beyond this they get BUSY", low=1, high=100_000)
    max_batch_size: int = param(
        1,
        "Questions (topic and action alike) answered together in one batched prefill and decode; 1 answers one at "
        "a time. Greedy answers are the same either way",
        low=1,
        high=256,
    )
    batch_wait_ms: float = param(
        0.0,
        "How long the first question of a batch waits for others to join it; 0 batches only the questions that "
        "queued up while the previous batch ran",
        low=0.0,
        high=10_000.0,
    )
    max_payload_bytes: int = param(
        16 * 1024 * 1024,
        "Largest accepted payload; larger ones are answered DECODE_ERROR unread",
        low=1,
        high=(1 << 31) - 1,
    )
    max_image_pixels: int = param(
        33_554_432,
        "Largest image payload (width x height) answered; larger ones get DECODE_ERROR before decoding",
        low=1,
        high=1 << 30,
    )
    features_qos_reliability: str = param("reliable", "Features subscription reliability", choices=_RELIABILITY)
    features_qos_depth: int = param(10, "Features subscription depth", low=1, high=1000)
    questions_qos_reliability: str = param("reliable", "Questions subscription reliability", choices=_RELIABILITY)
    questions_qos_depth: int = param(100, "Questions subscription depth", low=1, high=100_000)
    two_stage: bool = param(
        False,
        "Two-stage answering: when the first-pass answer's min-entropy exceeds refine_threshold, ask the device for "
        "a detailed crop of where the model looked and answer again from both (the device needs two_stage too)",
    )
    refine_threshold: float = param(
        0.7, "Two-stage: ask for detail above this min-entropy (nats) of the answer's least sure token", low=0.0,
        high=100.0,
    )  # fmt: skip
    refine_timeout_s: float = param(
        2.0, "Two-stage: longest wait for the crop, then the first-pass answer is published (REFINE_TIMED_OUT)",
        low=0.001, high=3600.0,
    )  # fmt: skip
    refine_max_area: float = param(
        0.0, "Two-stage: largest crop asked for, as a fraction of the frame (0: the device's refine_max_area)",
        low=0.0, high=1.0,
    )  # fmt: skip
    refine_n_clusters: int = param(
        0, "Two-stage: merged features per tile asked for the crop (0: the device's refine_n_clusters)", low=0,
        high=4096,
    )  # fmt: skip
    answers_qos_reliability: str = param("reliable", "Answers publisher reliability", choices=_RELIABILITY)
    answers_qos_depth: int = param(100, "Answers publisher depth", low=1, high=100_000)
    diagnostics_period_s: float = param(1.0, "Period of /diagnostics status messages", low=0.05, high=3600.0)


@dataclasses.dataclass(frozen=True)
class UplinkConfig(_Validated):
    """Parameters of the uplink emulator node."""

    rate_mbps: float = param(10.0, "Link rate in Mbit/s (without rate_trace)", low=0.001, high=100_000.0)
    rate_trace: str = param(
        "",
        "Rate over time instead of rate_mbps: 'offset_s:rate_mbps, ...' (e.g. '0:50, 30:2, 60:10, 90:0.5'; 0 is "
        "a dead link) or a file of such pairs, one per line; offsets count from the first message relayed; '' or "
        "'none': off",
    )
    latency_ms: float = param(20.0, "One-way latency in milliseconds", low=0.0, high=60_000.0)
    max_backlog_s: float = param(
        10.0, "Longest queued transmission time before messages are dropped", low=0.0, high=3600.0
    )
    features_in_qos_reliability: str = param(
        "best_effort",
        "Subscription reliability on features_in; best_effort matches a reliable or a best-effort "
        "device publisher (REP-2003)",
        choices=_RELIABILITY,
    )
    features_in_qos_depth: int = param(100, "Subscription depth on features_in", low=1, high=100_000)
    features_out_qos_reliability: str = param("reliable", "Publisher reliability on features_out", choices=_RELIABILITY)
    features_out_qos_depth: int = param(100, "Publisher depth on features_out", low=1, high=100_000)
    diagnostics_period_s: float = param(1.0, "Period of /diagnostics status messages", low=0.05, high=3600.0)


@dataclasses.dataclass(frozen=True)
class ReplayConfig(_Validated):
    """Parameters of the replay node ('auto' stands for an empty string, which launch files cannot pass)."""

    bag: str = param("auto", "Input bag: rosbag2 directory or .mcap/.db3 file (required)")
    questions_file: str = param("auto", "Questions/ground-truth JSONL; auto: <bag>.questions.jsonl if present")
    output_dir: str = param("replay_report", "Where the answers bag and the report go")
    mode: str = param(
        "timed", "timed (recorded timing x rate) or fast (as fast as the graph keeps up)", choices=("timed", "fast")
    )
    rate: float = param(1.0, "Playback speed factor in timed mode", low=0.01, high=1000.0)
    camera_topic: str = param("auto", "Camera topic in the bag; auto: its only Image/CompressedImage topic")
    questions_topic: str = param("auto", "Question topic in the bag; auto: its only Question topic")
    storage: str = param("mcap", "Output bag storage", choices=("mcap", "sqlite3"))
    record_features: bool = param(False, "Also record the CompressedFeatures into the output bag")
    wait_for_features: bool = param(True, "fast mode: wait for each frame's features before going on")
    frame_timeout_s: float = param(2.0, "fast mode: longest wait for a frame's features", low=0.0, high=3600.0)
    answer_timeout_s: float = param(30.0, "Longest wait for an answer", low=0.1, high=86400.0)
    startup_timeout_s: float = param(30.0, "Longest wait for the graph's subscribers", low=0.1, high=3600.0)
    image_qos_reliability: str = param(
        "best_effort", "Camera publisher reliability (sensor data, REP-2003)", choices=_RELIABILITY
    )
    image_qos_depth: int = param(1, "Camera publisher depth", low=1, high=1000)
    questions_qos_reliability: str = param("reliable", "Questions publisher reliability", choices=_RELIABILITY)
    questions_qos_depth: int = param(100, "Questions publisher depth", low=1, high=100_000)
    answers_qos_reliability: str = param("reliable", "Answers subscription reliability", choices=_RELIABILITY)
    answers_qos_depth: int = param(100, "Answers subscription depth", low=1, high=100_000)
    features_qos_reliability: str = param(
        "best_effort",
        "Features subscription reliability (an observer: best_effort matches any publisher)",
        choices=_RELIABILITY,
    )
    features_qos_depth: int = param(100, "Features subscription depth", low=1, high=100_000)
    report_overlays: int = param(
        4,
        "Debug overlays of asked-about frames (the device's `debug/image`, when it publishes one) shown in the report",
        low=0,
        high=1000,
    )


@dataclasses.dataclass(frozen=True)
class DemoClientConfig(_Validated):
    """Parameters of the demo client (a synthetic camera and an asker)."""

    questions: int = param(5, "Questions to ask before exiting", low=1, high=10_000)
    camera: str = param("front", "Camera id the questions name")
    frame_rate_hz: float = param(10.0, "Synthetic camera frame rate", low=0.1, high=1000.0)
    answer_timeout_s: float = param(60.0, "Longest wait for the answers before exiting", low=0.1, high=86400.0)
    image_height: int = param(480, "Synthetic frame height", low=1, high=8192)
    image_width: int = param(640, "Synthetic frame width", low=1, high=8192)
    image_qos_reliability: str = param(
        "best_effort", "Camera publisher reliability (sensor data, REP-2003)", choices=_RELIABILITY
    )
    image_qos_depth: int = param(1, "Camera publisher depth", low=1, high=1000)
    questions_qos_reliability: str = param("reliable", "Questions publisher reliability", choices=_RELIABILITY)
    questions_qos_depth: int = param(100, "Questions publisher depth", low=1, high=100_000)
    answers_qos_reliability: str = param("reliable", "Answers subscription reliability", choices=_RELIABILITY)
    answers_qos_depth: int = param(100, "Answers subscription depth", low=1, high=100_000)


def read_params_file(path: str | Path, node_name: str, namespace: str = "/") -> dict[str, Any]:
    """The parameters a ROS 2 params file gives one node, merged the way rcl applies them.

    Keys may be `/**`, a node name, or a fully qualified `/ns/name`; later, more specific sections win.
    Nested dictionaries flatten to dotted names as in ROS.

    Raises:
        ValueError: the file is not a ROS 2 params file.
    """
    path = Path(path)
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a ROS 2 params file is a mapping of node names to {{ros__parameters: ...}}")
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    wanted = ["/**", node_name, f"{ns}/{node_name}"]
    merged: dict[str, Any] = {}
    for key in dict.fromkeys(wanted):
        section = data.get(key)
        if section is None:
            continue
        if not isinstance(section, dict) or "ros__parameters" not in section:
            raise ValueError(f"{path}: section '{key}' has no 'ros__parameters' mapping")
        merged.update(_flatten(section["ros__parameters"] or {}))
    return merged


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out
