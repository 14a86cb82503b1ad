"""The records that flow through the graph, one type each, shared by nodes, replay, evaluation and tests (no rclpy).

    device:  rgb --FrameEncoder--> EncodedFrame(payload, timings)
    wire:    CompressedFeatures = routing (camera, stamp, sequence) + format + payload + timings   (nodes/adapters)
    server:  ReceivedFrame (what arrived) --FrameDecoder--> DecodedFrame (validated payload contents)
             Request (a question) + ReceivedFrame --ServerCore + Answerer--> AnswerRecord --> Answer

Everything a decoder needs comes from the payload (``codec.bitstream.FrameHeader``); a record holds the header it
was parsed to, never a second copy of its fields.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "Status",
    "Refinement",
    "DeviceTimings",
    "EncodedFrame",
    "ReceivedFrame",
    "DecodedFrame",
    "Request",
    "AnswerRecord",
    "stamp_ns",
    "deadline_ns",
    "MAX_TIMEOUT_S",
    "oversize_refusal",
]


def stamp_ns(stamp) -> int:
    """A builtin_interfaces/Time (any object with sec and nanosec: rclpy's or rosbags') as integer nanoseconds,
    the one time unit of every record."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


MAX_TIMEOUT_S = 3600.0  # the longest a question may ask to wait; a longer (or infinite) wish is cut to it


def deadline_ns(received_ns: int, timeout_s: float, default_timeout_s: float) -> int:
    """The deadline of a question received at ``received_ns`` that asked to wait ``timeout_s`` seconds.

    Zero, negative or NaN means "the server's default"; anything longer than :data:`MAX_TIMEOUT_S` (infinity
    included) is cut to it, so a wire value can never overflow the integer clock. Shared by the node's adapters
    and offline re-answering so both compute the same deadline.
    """
    timeout = float(timeout_s)
    if not timeout > 0:  # also catches NaN
        timeout = float(default_timeout_s)
    return int(received_ns) + int(min(timeout, MAX_TIMEOUT_S) * 1e9)


def oversize_refusal(payload_size: int, max_payload_bytes: int) -> str:
    """Why a payload of ``payload_size`` bytes is refused unread ("" when it is within the bound)."""
    if payload_size <= max_payload_bytes:
        return ""
    return f"payload of {payload_size} B exceeds max_payload_bytes = {max_payload_bytes}"


class Status(enum.IntEnum):
    """Answer status; the values are the STATUS_* constants of tofc_msgs/Answer (a test keeps them equal)."""

    OK = 0
    NO_FRAME = 1  # no frame of that camera matched image_stamp within the waiting time
    TIMEOUT = 2  # waited too long in the server (queue or generation), or the server shut down
    DECODE_ERROR = 3  # the payload could not be decoded (malformed, truncated, checksum, shapes)
    MODEL_MISMATCH = 4  # made by other codec or backbone weights (or a format) than the server holds
    BUSY = 5  # the server's bounded question queue is full
    BAD_REQUEST = 6  # the question itself is invalid
    INTERNAL_ERROR = 7  # anything else; the error text says what
    CANCELED = 8  # cancelled by its asker (action goals), waiting or generating; text: the partial answer


class Refinement(enum.IntEnum):
    """How two-stage answering ended for one answer; the values are tofc_msgs/Answer's REFINE_* constants."""

    NONE = 0  # answered from the first pass (confident enough, or two-stage answering is off)
    DONE = 1  # answered from the first pass's tokens plus the robot's detailed crop
    TIMED_OUT = 2  # the first-pass answer: no detail came within refine_timeout_s (or the question's own deadline)
    FAILED = 3  # the first-pass answer: the device refused, or its crop could not be decoded or answered


@dataclass(frozen=True)
class DeviceTimings:
    """Device-side milliseconds of one frame: vision tower, merging, entropy coding."""

    vision_ms: float = 0.0
    merge_ms: float = 0.0
    encode_ms: float = 0.0


@dataclass(frozen=True)
class EncodedFrame:
    """What a FrameEncoder returns: the payload (a bitstream container) and how long each step took.

    ``clusters`` is (assignment int [T, n_v], centres int [T, C]) of the DPC-KNN merge when the encoder was asked to
    keep them (the device's debug overlay), else None; it never travels.
    """

    payload: bytes
    format: str
    timings: DeviceTimings
    clusters: tuple | None = None


@dataclass(frozen=True)
class ReceivedFrame:
    """One CompressedFeatures message as the server holds it: routing, the claimed format, payload, timing.

    Attributes:
        camera, stamp_ns, sequence: routing (the camera image's stamp names the frame).
        format: the message's ``format`` field; the decoder refuses a payload that disagrees.
        payload: the container bytes (empty when refused unread, see ``refusal``).
        payload_size: bytes on the wire.
        refusal: non-empty when the node refused the payload before keeping it (too large), and why.
        device_ms: the device's whole per-frame time; sent_ns: its clock at publish; arrival_ns: ours at receipt.
    """

    camera: str
    stamp_ns: int
    sequence: int
    format: str
    payload: bytes
    payload_size: int
    refusal: str
    device_ms: float
    sent_ns: int
    arrival_ns: int


@dataclass(frozen=True, eq=False)
class DecodedFrame:
    """A payload validated against the server's models and decoded.

    Attributes:
        header: the container header (``codec.FrameHeader``): format, fingerprints, image size, grid, shapes.
        features: Tensor[T, C, D] for feature payloads, else None.
        rgb: ndarray[H, W, 3] uint8 for image payloads, else None.
    """

    header: object
    features: object = None
    rgb: object = None


@dataclass(frozen=True)
class Request:
    """A question as the server keeps it (times in the server clock's nanoseconds)."""

    question_id: str
    text: str
    camera: str
    stamp_ns: int  # the image stamp asked about; 0 = the latest frame
    asked_ns: int  # the Question's header stamp (0 when the asker left it empty)
    received_ns: int
    deadline_ns: int  # past it: NO_FRAME while waiting for the frame, TIMEOUT in the queue or during generation
    max_new_tokens: int = 0  # the asker's limit on the answer's length (0: the server's own)


@dataclass(frozen=True)
class AnswerRecord:
    """Everything an Answer message carries (built by the server core, read back by the replay report)."""

    question_id: str
    status: Status
    error: str = ""
    text: str = ""
    camera: str = ""
    image_stamp_ns: int = 0
    format: str = ""
    payload_bytes: int = 0
    device_ms: float = 0.0
    transfer_ms: float = 0.0
    wait_ms: float = 0.0
    server_ms: float = 0.0
    total_ms: float = 0.0
    refinement: Refinement = Refinement.NONE
    uncertainty: float = -1.0  # min-entropy (nats) of the answer's least sure token; -1: unknown (NaN would break ==)
    refine_payload_bytes: int = 0  # the detailed crop's bytes (payload_bytes: the first pass's)
