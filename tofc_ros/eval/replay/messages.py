"""Building and reading the replayed messages as CDR bytes with the rosbags typestore (no rclpy).

The replay node publishes these bytes as they are (``publisher.publish(bytes)``) and records what its raw
subscriptions receive, so nothing here depends on the generated Python message classes.
"""

from __future__ import annotations

import numpy as np

from tofc_ros.eval.replay.bags import BagQuestion
from tofc_ros.eval.replay.typestore import ANSWER, COMPRESSED_IMAGE, FEATURES, IMAGE, QUESTION, typestore
from tofc_ros.pipeline.records import AnswerRecord, ReceivedFrame, Refinement, Status, stamp_ns

__all__ = [
    "answer_cdr",
    "answer_record",
    "features_cdr",
    "features_frame",
    "image_cdr",
    "question_cdr",
    "compressed_image_cdr",
]


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
    msg = Question(
        header=_header(asked_ns),
        question_id=q.question_id,
        text=q.text,
        camera=q.camera,
        image_stamp=_time(q.image_stamp_ns),
        timeout_s=float(q.timeout_s),
    )
    return bytes(typestore().serialize_cdr(msg, QUESTION))


def image_cdr(rgb: np.ndarray, stamp: int, frame_id: str = "camera_optical_frame") -> bytes:
    """sensor_msgs/Image rgb8 from uint8 [H, W, 3], as CDR bytes."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
    h, w, _ = rgb.shape
    Image = typestore().types[IMAGE]
    msg = Image(
        header=_header(stamp, frame_id),
        height=h,
        width=w,
        encoding="rgb8",
        is_bigendian=0,
        step=w * 3,
        data=np.ascontiguousarray(rgb).reshape(-1),
    )
    return bytes(typestore().serialize_cdr(msg, IMAGE))


def compressed_image_cdr(data: bytes, fmt: str, stamp: int, frame_id: str = "camera_optical_frame") -> bytes:
    """sensor_msgs/CompressedImage (``fmt`` "png" or "jpeg") as CDR bytes."""
    Msg = typestore().types[COMPRESSED_IMAGE]
    msg = Msg(header=_header(stamp, frame_id), format=fmt, data=np.frombuffer(data, np.uint8))
    return bytes(typestore().serialize_cdr(msg, COMPRESSED_IMAGE))


def answer_record(data: bytes) -> AnswerRecord:
    """Deserialise an Answer's CDR bytes (an unknown status value raises ValueError)."""
    m = typestore().deserialize_cdr(data, ANSWER)
    return AnswerRecord(
        m.question_id,
        Status(m.status),
        m.error,
        m.text,
        m.camera,
        stamp_ns(m.image_stamp),
        m.format,
        int(m.payload_bytes),
        float(m.device_ms),
        float(m.transfer_ms),
        float(m.wait_ms),
        float(m.server_ms),
        float(m.total_ms),
        Refinement(m.refinement),
        float(m.uncertainty),
        int(m.refine_payload_bytes),
    )


def answer_cdr(record: AnswerRecord, stamp: int = 0) -> bytes:
    """An Answer as CDR bytes (offline re-answering and tests; the server node builds its own)."""
    Answer = typestore().types[ANSWER]
    msg = Answer(
        header=_header(stamp),
        question_id=record.question_id,
        status=int(record.status),
        error=record.error,
        text=record.text,
        camera=record.camera,
        image_stamp=_time(record.image_stamp_ns),
        format=record.format,
        payload_bytes=int(record.payload_bytes),
        device_ms=float(record.device_ms),
        transfer_ms=float(record.transfer_ms),
        wait_ms=float(record.wait_ms),
        server_ms=float(record.server_ms),
        total_ms=float(record.total_ms),
        refinement=int(record.refinement),
        uncertainty=float(record.uncertainty),
        refine_payload_bytes=int(record.refine_payload_bytes),
    )
    return bytes(typestore().serialize_cdr(msg, ANSWER))


def features_frame(data: bytes, arrival_ns: int = 0, keep_payload: bool = False) -> ReceivedFrame:
    """A CompressedFeatures message's CDR bytes as the server's ReceivedFrame (payload dropped unless kept)."""
    m = typestore().deserialize_cdr(data, FEATURES)
    payload = bytes(m.payload)
    return ReceivedFrame(
        camera=m.camera,
        stamp_ns=stamp_ns(m.header.stamp),
        sequence=int(m.sequence),
        format=m.format,
        payload=payload if keep_payload else b"",
        payload_size=len(payload),
        refusal="",
        device_ms=float(m.device_ms),
        sent_ns=stamp_ns(m.sent),
        arrival_ns=arrival_ns,
    )


def features_cdr(
    frame_id: str,
    camera: str,
    stamp: int,
    sequence: int,
    fmt: str,
    payload: bytes,
    device_ms: float = 0.0,
    sent: int = 0,
) -> bytes:
    """A CompressedFeatures as CDR bytes (tests and tools; the device node builds its own)."""
    Msg = typestore().types[FEATURES]
    msg = Msg(
        header=_header(stamp, frame_id),
        camera=camera,
        sequence=sequence,
        format=fmt,
        payload=np.frombuffer(payload, np.uint8),
        vision_ms=0.0,
        merge_ms=0.0,
        encode_ms=0.0,
        device_ms=float(device_ms),
        sent=_time(sent),
    )
    return bytes(typestore().serialize_cdr(msg, FEATURES))
