"""Messages <-> pipeline records, in one place: the only module that knows both the msg fields and the records.

    CompressedFeatures  <- features_msg(EncodedFrame, image header, camera, sequence, device_ms, sent)   (device)
                        -> received_frame(msg, arrival_ns, max_payload_bytes) -> ReceivedFrame         (server)
    Question            -> request(msg, received_ns, default camera, default timeout) -> Request         (server)
    Answer              <- answer_msg(AnswerRecord, stamp)                                              (server)
    Ask goal            -> goal_request(goal, question_id, received_ns, default camera, default timeout) -> Request
                        -> goal_frame(goal, payload, format, camera, received_ns) -> ReceivedFrame  (its image)
    Ask feedback        <- ask_feedback(text so far, tokens)
    Ask result          <- ask_result(AnswerRecord, stamp)                       (the Answer the topic would carry)
    Image               <- image_msg(rgb, header)                                    (device: the debug overlay)
    RefineRequest       <- refine_request_msg(RefineAsk, stamp)                                         (server)
                        -> refine_ask(msg) -> RefineAsk                                                 (device)
    RefinedFeatures     <- refined_msg(RefineAsk, Region | None, CompressedFeatures | None, status, error, stamp)
                        -> refine_reply(msg, arrival_ns, max_payload_bytes) -> RefineReply             (server)

No rclpy here, only the generated message classes; the nodes call these and stay thin.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image

from tofc_msgs.action import Ask
from tofc_msgs.msg import Answer, CompressedFeatures, Question, RefinedFeatures, RefineRequest
from tofc_ros.pipeline.records import (
    AnswerRecord,
    EncodedFrame,
    ReceivedFrame,
    Request,
    deadline_ns,
    oversize_refusal,
    stamp_ns,
)
from tofc_ros.pipeline.refine import RefineAsk, RefineRefused, RefineReply, Region

__all__ = [
    "stamp_ns",
    "to_time",
    "features_msg",
    "received_frame",
    "request",
    "answer_msg",
    "goal_request",
    "goal_frame",
    "ask_feedback",
    "ask_result",
    "image_msg",
    "refine_request_msg",
    "refine_ask",
    "refused_ask",
    "refined_msg",
    "refine_reply",
]

MAX_TOKEN_WEIGHTS = 1 << 20  # more weights than any payload has tokens (the container's own limit is lower)


def to_time(ns: int) -> Time:
    """Integer nanoseconds as builtin_interfaces/Time."""
    sec, nanosec = divmod(int(ns), 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


def features_msg(
    frame: EncodedFrame, image_header, camera: str, sequence: int, device_ms: float, sent_ns: int
) -> CompressedFeatures:
    """The CompressedFeatures of an encoded frame; the header (stamp, frame_id) is the camera image's own."""
    msg = CompressedFeatures()
    msg.header = image_header
    msg.camera = camera
    msg.sequence = sequence
    msg.format = frame.format
    msg.payload = frame.payload
    msg.vision_ms = frame.timings.vision_ms
    msg.merge_ms = frame.timings.merge_ms
    msg.encode_ms = frame.timings.encode_ms
    msg.device_ms = device_ms
    msg.sent = to_time(sent_ns)
    return msg


def received_frame(msg: CompressedFeatures, arrival_ns: int, max_payload_bytes: int) -> ReceivedFrame:
    """What the server keeps of a CompressedFeatures; an oversize payload is dropped unread and marked refused."""
    size = len(msg.payload)
    refusal = oversize_refusal(size, max_payload_bytes)
    return ReceivedFrame(
        camera=msg.camera,
        stamp_ns=stamp_ns(msg.header.stamp),
        sequence=int(msg.sequence),
        format=msg.format,
        payload=b"" if refusal else bytes(msg.payload),
        payload_size=size,
        refusal=refusal,
        device_ms=float(msg.device_ms),
        sent_ns=stamp_ns(msg.sent),
        arrival_ns=arrival_ns,
    )


def request(msg: Question, received_ns: int, default_camera: str, default_timeout_s: float) -> Request:
    """A Question as the server core keeps it (its deadline counted from receipt)."""
    return Request(
        question_id=msg.question_id,
        text=msg.text,
        camera=msg.camera or default_camera,
        stamp_ns=stamp_ns(msg.image_stamp),
        asked_ns=stamp_ns(msg.header.stamp),
        received_ns=received_ns,
        deadline_ns=deadline_ns(received_ns, msg.timeout_s, default_timeout_s),
    )


def goal_request(
    goal: Ask.Goal, question_id: str, received_ns: int, default_camera: str, default_timeout_s: float
) -> Request:
    """An Ask goal as the server core keeps a question (``question_id``: the goal id; deadline from receipt)."""
    return Request(
        question_id=question_id,
        text=goal.text,
        camera=goal.camera or default_camera,
        stamp_ns=stamp_ns(goal.image.header.stamp) if has_image(goal) else stamp_ns(goal.image_stamp),
        asked_ns=received_ns,  # a goal carries no asking time of its own: its acceptance is it
        received_ns=received_ns,
        deadline_ns=deadline_ns(received_ns, goal.timeout_s, default_timeout_s),
        max_new_tokens=int(goal.max_new_tokens),
    )


def has_image(goal: Ask.Goal) -> bool:
    """Whether the goal brings its own picture (an inline sensor_msgs/Image with pixels)."""
    return goal.image.width * goal.image.height > 0


def goal_frame(goal: Ask.Goal, payload: bytes, fmt: str, camera: str, received_ns: int) -> ReceivedFrame:
    """The frame of a goal's inline image, coded as ``payload`` (the server decodes and answers it like any
    image payload); it arrived with the goal, so there is no device time and no transfer term."""
    return ReceivedFrame(
        camera=camera,
        stamp_ns=stamp_ns(goal.image.header.stamp),
        sequence=0,
        format=fmt,
        payload=payload,
        payload_size=len(goal.image.data),
        refusal="",
        device_ms=0.0,
        sent_ns=0,
        arrival_ns=received_ns,
    )


def ask_feedback(text: str, tokens: int) -> Ask.Feedback:
    """The answer so far, after ``tokens`` generated tokens."""
    return Ask.Feedback(text=text, tokens=tokens)


def ask_result(record: AnswerRecord, stamp_ns_now: int) -> Ask.Result:
    """The goal's result: the Answer the topic protocol would publish for the same record."""
    return Ask.Result(answer=answer_msg(record, stamp_ns_now))


def answer_msg(record: AnswerRecord, stamp_ns_now: int) -> Answer:
    """The Answer message of a record, stamped with the publishing time."""
    msg = Answer()
    msg.header.stamp = to_time(stamp_ns_now)
    msg.question_id = record.question_id
    msg.status = int(record.status)
    msg.error = record.error
    msg.text = record.text
    msg.camera = record.camera
    msg.image_stamp = to_time(record.image_stamp_ns)
    msg.format = record.format
    msg.payload_bytes = record.payload_bytes
    msg.device_ms = record.device_ms
    msg.transfer_ms = record.transfer_ms
    msg.wait_ms = record.wait_ms
    msg.server_ms = record.server_ms
    msg.total_ms = record.total_ms
    msg.refinement = int(record.refinement)
    msg.uncertainty = record.uncertainty
    msg.refine_payload_bytes = record.refine_payload_bytes
    return msg


def refine_request_msg(ask: RefineAsk, stamp_ns_now: int) -> RefineRequest:
    """The RefineRequest of a held first-pass answer (the server asks the device for detail)."""
    msg = RefineRequest()
    msg.header.stamp = to_time(stamp_ns_now)
    msg.question_id = ask.question_id
    msg.camera = ask.camera
    msg.image_stamp = to_time(ask.stamp_ns)
    msg.token_weights = np.asarray(ask.token_weights, dtype=np.float32)
    if ask.region is not None:
        msg.x, msg.y, msg.width, msg.height = ask.region.x, ask.region.y, ask.region.width, ask.region.height
    msg.max_area = float(ask.max_area)
    msg.n_clusters = int(ask.n_clusters)
    return msg


def refine_ask(msg: RefineRequest) -> RefineAsk:
    """A RefineRequest as the device's refiner takes it.

    Raises:
        RefineRefused: no question id, too many weights, or settings out of range (checked before anything is built).
    """
    if not msg.question_id:
        raise RefineRefused("question_id must not be empty")
    if len(msg.token_weights) > MAX_TOKEN_WEIGHTS:
        raise RefineRefused(f"{len(msg.token_weights)} token weights, more than {MAX_TOKEN_WEIGHTS}")
    if not 0 <= msg.max_area <= 1:
        raise RefineRefused(f"max_area must be in [0, 1] (0: the device's default), got {msg.max_area}")
    region = None
    if msg.width * msg.height > 0:
        region = Region(int(msg.x), int(msg.y), int(msg.width), int(msg.height))
    elif len(msg.token_weights) == 0:
        raise RefineRefused("neither token weights nor a region")
    return RefineAsk(
        question_id=msg.question_id,
        camera=msg.camera,
        stamp_ns=stamp_ns(msg.image_stamp),
        token_weights=np.asarray(msg.token_weights, dtype=np.float32),
        region=region,
        max_area=float(msg.max_area),
        n_clusters=int(msg.n_clusters),
    )


def refused_ask(msg: RefineRequest) -> RefineAsk:
    """Only the routing of a RefineRequest (question id, camera, stamp): what a reply to a refused one needs."""
    return RefineAsk(msg.question_id, msg.camera, stamp_ns(msg.image_stamp), np.zeros(0, dtype=np.float32))


def refined_msg(
    ask: RefineAsk, region: Region | None, features: CompressedFeatures | None, status: int, error: str, now_ns: int
) -> RefinedFeatures:
    """The device's reply: the crop's features (``status`` STATUS_OK), or why not."""
    msg = RefinedFeatures()
    msg.header.stamp = to_time(now_ns)
    msg.question_id = ask.question_id
    msg.camera = ask.camera
    msg.image_stamp = to_time(ask.stamp_ns)
    msg.status = status
    msg.error = error
    if region is not None:
        msg.x, msg.y, msg.width, msg.height = region.x, region.y, region.width, region.height
    if features is not None:
        msg.features = features
    return msg


def refine_reply(msg: RefinedFeatures, arrival_ns: int, max_payload_bytes: int) -> RefineReply:
    """What the server core takes of a RefinedFeatures (an oversize crop is dropped unread and marked refused)."""
    ok = msg.status == RefinedFeatures.STATUS_OK
    region = Region(int(msg.x), int(msg.y), int(msg.width), int(msg.height)) if ok else None
    return RefineReply(
        question_id=msg.question_id,
        camera=msg.camera,
        stamp_ns=stamp_ns(msg.image_stamp),
        ok=ok,
        error=msg.error if not ok else "",
        region=region,
        frame=received_frame(msg.features, arrival_ns, max_payload_bytes) if ok else None,
    )


def image_msg(rgb: np.ndarray, header) -> Image:
    """An rgb8 sensor_msgs/Image of a uint8 [H, W, 3] array (the debug overlay), with the given header."""
    msg = Image(
        height=int(rgb.shape[0]), width=int(rgb.shape[1]), encoding="rgb8", is_bigendian=0, step=int(rgb.shape[1]) * 3
    )
    msg.header = header
    msg.data = np.ascontiguousarray(rgb).tobytes()
    return msg
