"""Both passes of two-stage answering offline, one frame at a time, through the objects the nodes run (no rclpy).

The device's FeatureEncoder (assignment kept) and DeviceRefiner, the server's ServerCore with TwoStage holding every
answer, and its decoder and answerer: the evaluation (``eval.two_stage``) measures them, and the two-view trainer
(``train.two_stage``) makes its crops with them, so both see exactly what the nodes would.
"""

from __future__ import annotations

import time

from tofc_ros.pipeline.encoder import FeatureEncoder
from tofc_ros.pipeline.records import ReceivedFrame, Request
from tofc_ros.pipeline.refine import DeviceRefiner, RefineAsk, RefineReply
from tofc_ros.pipeline.server_core import ServerCore, TwoStage

__all__ = ["TwoPassRig", "received", "request_about", "job_of"]


def received(encoded, camera: str, stamp_ns: int) -> ReceivedFrame:
    """An encoded frame as the server receives it (no transfer: sent and arrival times unknown)."""
    n = len(encoded.payload)
    return ReceivedFrame(camera, stamp_ns, 0, encoded.format, encoded.payload, n, "", 0.0, 0, 0)


def request_about(question_id: str, text: str, stamp_ns: int, max_new_tokens: int) -> Request:
    """A question about the frame stamped ``stamp_ns`` of camera "cam" that never times out."""
    return Request(question_id, text, "cam", stamp_ns, 0, 0, 1 << 62, max_new_tokens)


class TwoPassRig:
    """Both passes of two-stage answering for one frame at a time, through the objects the nodes run: the device's
    FeatureEncoder and DeviceRefiner, the server's ServerCore (TwoStage holding every answer) with its decoder and
    answerer. The evaluation and the two-stage trainer (its crops) both use it.
    """

    def __init__(self, device_half, codec, decoder, answerer, first_n_c, detail_n_c, max_area, dpc_k=5):
        self.decoder, self.answerer = decoder, answerer
        self.encoder = FeatureEncoder(device_half, codec, first_n_c, dpc_k, keep_clusters=True)
        self.refiner = DeviceRefiner(self.encoder, max_area, detail_n_c, history=4)
        self.clock = iter(range(1, 1 << 62)).__next__  # orders events only: no deadline is ever reached
        two = TwoStage(threshold=-1.0, timeout_ns=1 << 60)  # hold every answer: both passes of every question
        self.core = ServerCore(decoder, answerer, self.clock, queue_size=1 << 20, two_stage=two)
        self._stamp = 0

    def first_pass(self, rgb, questions, max_new_tokens: int):
        """(the first pass's EncodedFrame, one RefineAsk per question, device ms, server ms per question)."""
        self._stamp += 1
        t0 = time.perf_counter()
        first = self.encoder.encode(rgb)
        t1 = time.perf_counter()
        self.refiner.remember("cam", self._stamp, first)
        self.core.add_frame(received(first, "cam", self._stamp))
        requests = [
            request_about(f"{self._stamp}-{k}", text, self._stamp, max_new_tokens) for k, text in enumerate(questions)
        ]
        t2 = time.perf_counter()
        asks = self.core.run_batch([job_of(self.core, r) for r in requests])
        t3 = time.perf_counter()
        for ask in asks:
            if not isinstance(ask, RefineAsk):  # a failure of the first pass: no second one
                raise RuntimeError(f"question {ask.question_id}: {ask.status.name}: {ask.error}")
        return first, asks, (t1 - t0) * 1e3, (t3 - t2) * 1e3 / max(1, len(requests))

    def detail(self, ask, rgb):
        """(Region, the crop's EncodedFrame, the second pass's Job, device ms of the crop)."""
        c0 = time.perf_counter()
        region, crop = self.refiner.refine(ask, rgb)
        c1 = time.perf_counter()
        reply = RefineReply(ask.question_id, "cam", ask.stamp_ns, True, "", region, received(crop, "cam", ask.stamp_ns))
        return region, crop, self.core.refined(reply), (c1 - c0) * 1e3


def job_of(core, request):
    """The Job of a question whose frame the core holds (anything else is a bug of the caller)."""
    job = core.ask(request)
    if job is None or not hasattr(job, "frame"):
        raise RuntimeError(f"question {request.question_id} was not paired with its frame: {job}")
    return job
