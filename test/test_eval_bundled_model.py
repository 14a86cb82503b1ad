"""The committed models and their TOFC codecs, run through the objects the nodes run (the device's FeatureEncoder,
the server's FrameDecoder and ModelAnswerer), keep their accuracy on a fixed slice of their test split (greedy
generation, the serving path):

    models/scenes-tiny-ov    the default: 1280x720 camera scenes (tofc_ros.data.scenes)
    models/easyvqa-tiny-ov   the second sample: easy-vqa's 64x64 images

Pinned floors are one question under what the committed files reach (see BENCHMARKS.md); a retrained model that
falls below them must not be committed silently. The slices are small: the full-split numbers are in BENCHMARKS.md.
"""

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

MODELS = Path(__file__).resolve().parents[1] / "models"


@dataclass(frozen=True)
class Bundle:
    name: str
    n_questions: int
    raw_floor: int  # correct answers (of n_questions) with uncompressed features, at least
    tofc_floor: int  # through DPC-KNN n_c = 16 + the TOFC codec, at least

    @property
    def path(self) -> Path:
        return MODELS / self.name

    def items(self):
        if self.name.startswith("easyvqa"):
            from tofc_ros.data.easyvqa import load_split

            return load_split("test", self.n_questions)
        from tofc_ros.data.scenes import load_split

        return load_split("test", self.n_questions, limit=self.n_questions, sizes=((1280, 720),))


BUNDLES = [
    Bundle("easyvqa-tiny-ov", 50, raw_floor=49, tofc_floor=48),  # committed: 50/50 and 49/50
    Bundle("scenes-tiny-ov", 40, raw_floor=15, tofc_floor=16),  # committed: 16/40, 17/40 (near chance)
]


@pytest.fixture(scope="module", params=BUNDLES, ids=lambda b: b.name)
def deployed(request):
    """The objects the device and server nodes build from their parameter files with this model."""
    from tofc_ros.backbones import GenerationOptions, load_device_half, load_server_half
    from tofc_ros.codec import load_codec
    from tofc_ros.pipeline.answerer import model_server
    from tofc_ros.pipeline.encoder import FeatureEncoder

    bundle = request.param
    dev, srv = load_device_half(bundle.path), load_server_half(bundle.path)
    codec = load_codec(bundle.path / "tofc_codec.safetensors")
    raw = FeatureEncoder(dev, load_codec("fp16"), n_clusters=0)
    tofc = FeatureEncoder(dev, codec, n_clusters=16)
    decoder, answerer = model_server(srv, [codec], GenerationOptions(max_new_tokens=8), accept_images=False)
    return bundle, raw, tofc, decoder, answerer


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda b: b.name)
def test_bundle_is_small_and_complete(bundle):
    names = {p.name for p in bundle.path.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "preprocessor_config.json",
        "tofc_codec.safetensors",
    } <= names
    total = sum(p.stat().st_size for p in bundle.path.iterdir() if p.is_file())
    assert total < 8 * 2**20, f"bundled model is {total / 2**20:.1f} MiB"


@torch.inference_mode()
def test_uncompressed_and_tofc_accuracy_on_a_fixed_slice(deployed):
    bundle, raw_encoder, tofc_encoder, decoder, answerer = deployed
    raw_ok = tofc_ok = n = 0
    for item in bundle.items():
        rgb = item.rgb()
        raw = decoder.decode(raw_encoder.encode(rgb).payload)
        tofc = decoder.decode(tofc_encoder.encode(rgb).payload)
        (teacher,) = answerer.score([raw], [item.questions], [item.answers])
        for k, (q, a) in enumerate(zip(item.questions, item.answers, strict=True)):
            answer = answerer.answer(raw, q)
            # The teacher-forced score the benchmarks use agrees with greedy generation, question by question.
            assert teacher[k] == (answer == a), (q, a, answer)
            raw_ok += answer == a
            tofc_ok += answerer.answer(tofc, q) == a
            n += 1
    assert n == bundle.n_questions
    assert raw_ok >= bundle.raw_floor, f"{raw_ok}/{n} uncompressed"
    assert tofc_ok >= bundle.tofc_floor, f"{tofc_ok}/{n} through TOFC"
