"""Building and reading the replayed messages as CDR bytes with the rosbags typestore (no rclpy).

The replay node publishes these bytes as they are (``publisher.publish(bytes)``) and records what its raw
subscriptions receive, so nothing here depends on the generated Python message classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tofc_ros.eval.replay.bags import BagQuestion, stamp_ns
from tofc_ros.eval.replay.typestore import ANSWER, COMPRESSED_IMAGE, FEATURES, IMAGE, QUESTION, typestore

__all__ = ["STATUS_NAMES", "AnswerRecord", "FeaturesInfo", "answer_cdr", "answer_record", "features_info",
           "image_cdr", "question_cdr", "compressed_image_cdr", "restamp_question"]


def _status_names() -> dict[int, str]:
    cls = typestore().types[ANSWER]
    return {getattr(cls, n): n[len("STATUS_"):] for n in dir(cls) if n.startswith("STATUS_")}


STATUS_NAMES = _status_names()


def _types():
    t = typestore().types
    return t["builtin_interfaces/msg/Time"], t["std_msgs/msg/Header"]


def _time(ns: int):
    Time, _ = _types()
    sec, nanosec = divmod(int(ns), 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


def _header(ns: int, frame_id: str = ""):
    _, Header = _types()
    return Header(stamp=_time(ns), frame_id=frame_id)


def question_cdr(q: BagQuestion, asked_ns: int) -> bytes:
    """A tofc_msgs/Question as CDR bytes, its header stamped ``asked_ns`` (the server measures waiting from it)."""
    Question = typestore().types[QUESTION]
    msg = Question(header=_header(asked_ns), question_id=q.question_id, text=q.text, camera=q.camera,
                   image_stamp=_time(q.image_stamp_ns), timeout_s=float(q.timeout_s))
    return bytes(typestore().serialize_cdr(msg, QUESTION))


def restamp_question(data: bytes, asked_ns: int) -> bytes:
    """The same Question with header.stamp = ``asked_ns`` (a bag's recorded stamps lie in the past)."""
    msg = typestore().deserialize_cdr(data, QUESTION)
    msg.header.stamp = _time(asked_ns)
    return bytes(typestore().serialize_cdr(msg, QUESTION))


def image_cdr(rgb: np.ndarray, stamp: int, frame_id: str = "camera_optical_frame") -> bytes:
    """sensor_msgs/Image rgb8 from uint8 [H, W, 3], as CDR bytes."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
    h, w, _ = rgb.shape
    Image = typestore().types[IMAGE]
    msg = Image(header=_header(stamp, frame_id), height=h, width=w, encoding="rgb8", is_bigendian=0,
                step=w * 3, data=np.ascontiguousarray(rgb).reshape(-1))
    return bytes(typestore().serialize_cdr(msg, IMAGE))


def compressed_image_cdr(data: bytes, fmt: str, stamp: int, frame_id: str = "camera_optical_frame") -> bytes:
    """sensor_msgs/CompressedImage (``fmt`` "png" or "jpeg") as CDR bytes."""
    Msg = typestore().types[COMPRESSED_IMAGE]
    msg = Msg(header=_header(stamp, frame_id), format=fmt, data=np.frombuffer(data, np.uint8))
    return bytes(typestore().serialize_cdr(msg, COMPRESSED_IMAGE))


@dataclass(frozen=True)
class AnswerRecord:
    """The fields of a tofc_msgs/Answer the report uses; ``status`` is the name (OK, NO_FRAME, ...)."""

    question_id: str
    status: str
    error: str
    text: str
    camera: str
    image_stamp_ns: int
    format: str
    payload_bytes: int
    device_ms: float
    transfer_ms: float
    wait_ms: float
    server_ms: float
    total_ms: float


def answer_record(data: bytes) -> AnswerRecord:
    """Deserialise an Answer's CDR bytes."""
    m = typestore().deserialize_cdr(data, ANSWER)
    return AnswerRecord(m.question_id, STATUS_NAMES.get(m.status, f"UNKNOWN_{m.status}"), m.error, m.text,
                        m.camera, stamp_ns(m.image_stamp), m.format, int(m.payload_bytes), float(m.device_ms),
                        float(m.transfer_ms), float(m.wait_ms), float(m.server_ms), float(m.total_ms))


def answer_cdr(question_id: str, status: str = "OK", text: str = "", **fields) -> bytes:
    """An Answer as CDR bytes (tests and tools; the server builds its own)."""
    Answer = typestore().types[ANSWER]
    codes = {v: k for k, v in STATUS_NAMES.items()}
    msg = Answer(header=_header(fields.pop("stamp_ns", 0)), question_id=question_id, status=codes[status],
                 error=fields.pop("error", ""), text=text, camera=fields.pop("camera", ""),
                 image_stamp=_time(fields.pop("image_stamp_ns", 0)), format=fields.pop("format", ""),
                 payload_bytes=int(fields.pop("payload_bytes", 0)),
                 **{k: float(fields.pop(k, 0.0)) for k in
                    ("device_ms", "transfer_ms", "wait_ms", "server_ms", "total_ms")})
    if fields:
        raise TypeError(f"unknown Answer fields {sorted(fields)}")
    return bytes(typestore().serialize_cdr(msg, ANSWER))


@dataclass(frozen=True)
class FeaturesInfo:
    """What the report needs from a CompressedFeatures message (the payload itself is not kept)."""

    stamp_ns: int
    camera: str
    sequence: int
    format: str
    payload_bytes: int


def features_info(data: bytes) -> FeaturesInfo:
    """Deserialise a CompressedFeatures message's routing fields."""
    m = typestore().deserialize_cdr(data, FEATURES)
    return FeaturesInfo(stamp_ns(m.header.stamp), m.camera, int(m.sequence), m.format, len(m.payload))
