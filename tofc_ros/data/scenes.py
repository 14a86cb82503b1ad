"""Camera-resolution VQA scenes: easy-vqa shapes pasted small onto real photographs, rendered on demand.

A scene is a small immutable spec (photo, crop box, flip, frame size, and 1-3 objects each with its easy-vqa image id,
shape, colour and pasted box); ``SceneItem.rgb()`` renders it. Frames are never stored. The card is data/SCENES.md.

::

    photo (file in a PyPI wheel) ── crop ── integer bilinear resize ── mirror? ───┐
    easy-vqa PNG ── alpha vs its flat background ── resize to 3-12 % of W ──────┴─ alpha paste ─► frame [H, W, 3]

Splits are disjoint twice over: train scenes use the train photos and easy-vqa's train images only, test scenes the
test photos and easy-vqa's test images only (``PHOTOS`` lists which photo goes where).

Determinism. Scene ``index`` of a split is drawn from its own PCG64 stream seeded with ``(seed, split, index)``, so
it does not depend on how many scenes are asked for (scene 7 is the same in a list of 10 or of 10,000) and can be
made alone (``make_item``) inside a training loop. Draws use the bit generator's raw 64-bit output with our own
rejection sampling: NumPy keeps PCG64's raw stream fixed across versions, not ``Generator.integers``. Rendering is
integer arithmetic only (our own fixed-point bilinear resize, no PIL resampling, no floats), so the bytes of
``rgb()`` depend on nothing but the photo's decoded pixels: PNGs decode exactly; the JPEGs go through Pillow's
libjpeg-turbo (integer IDCT), which the tests pin by hash.

Nothing is downloaded: the photos are read as files from the installed wheels (never through
``skimage.data``'s fetchers, which may reach for pooch) and a missing file raises ``FileNotFoundError``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import numpy as np

from tofc_ros.data import easyvqa

__all__ = [
    "SPLITS",
    "FRAME_SIZES",
    "SHAPES",
    "COLOURS",
    "PALETTE",
    "COUNT_WORDS",
    "SIDES",
    "ANSWERS",
    "QUESTION_TYPES",
    "TEMPLATES",
    "DEFAULT_IMAGES",
    "MIN_OBJECT_PCT",
    "MAX_OBJECT_PCT",
    "Photo",
    "PHOTOS",
    "SceneObject",
    "SceneItem",
    "make_item",
    "load_split",
    "num_questions",
    "answer_balance",
    "audit_cutouts",
    "main",
]

SPLITS = easyvqa.SPLITS
FRAME_SIZES: tuple[tuple[int, int], ...] = ((1280, 720), (640, 480))  # (width, height)
SHAPES = easyvqa.SHAPES
COLOURS = easyvqa.COLOURS
# The exact RGB easy-vqa draws each colour with (checked on every cut-out: see _cut).
PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "blue": (0, 0, 255),
    "brown": (165, 42, 42),
    "gray": (128, 128, 128),
    "green": (0, 255, 0),
    "red": (255, 0, 0),
    "teal": (0, 128, 128),
    "yellow": (255, 255, 0),
}
COUNT_WORDS = ("1", "2", "3")  # digits: single tokens for the tiny tokenizer (its corpus has 0-9, "left", "right")
SIDES = ("left", "right")
ANSWERS: tuple[str, ...] = SHAPES + COLOURS + ("yes", "no") + COUNT_WORDS + SIDES
MIN_OBJECT_PCT, MAX_OBJECT_PCT = 3, 12  # an object's width (and at most its height) in % of the frame width
MAX_OBJECTS = 3
MIN_CROP_PCT = 60  # crop width in % of the widest crop with the frame's aspect ratio
CONTRAST_L1 = 120  # minimum L1 distance (sum over RGB) between an object's colour and the photo's mean under its box
DEFAULT_IMAGES = {"train": 10000, "test": 1000}

# Question templates. The presence, shape and colour ones are easy-vqa's own (all 24 of them); counting and the two
# left/right families are new. {a} and {b} are object references: "{shape}", "{color} shape" or "{color} {shape}",
# used only where they name exactly one object of the scene.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "color_presence": (
        "is there a {color} shape?",
        "is there a {color} shape in the image?",
        "does the image contain a {color} shape?",
        "is a {color} shape present?",
        "is there not a {color} shape?",
        "is there not a {color} shape in the image?",
        "does the image not contain a {color} shape?",
        "is no {color} shape present?",
    ),
    "shape_presence": (
        "is there a {shape}?",
        "is there a {shape} in the image?",
        "does the image contain a {shape}?",
        "is a {shape} present?",
        "is there not a {shape}?",
        "is there not a {shape} in the image?",
        "does the image not contain a {shape}?",
        "is no {shape} present?",
    ),
    # Without a reference ("the shape") only in one-object scenes.
    "shape": (
        "what shape does the image contain?",
        "what shape is in the image?",
        "what shape is present?",
        "what is the {color} shape?",
    ),
    "color": (
        "what color is the shape?",
        "what is the color of the shape?",
        "what color is the {shape}?",
        "what is the color of the {shape}?",
    ),
    "count": ("how many shapes are there?", "how many shapes are in the image?"),
    # "the left/right": every pixel of the object's box in that half of the frame (objects across the middle are
    # not asked about); "left or right of": the two boxes' column ranges do not overlap.
    "side": ("is the {a} on the left or the right?", "is the {a} left or right of the {b}?"),
    "left_of": ("is the {a} to the left of the {b}?", "is the {a} to the right of the {b}?"),
}
QUESTION_TYPES: tuple[str, ...] = tuple(TEMPLATES)
_NEGATED = frozenset(
    t for t in TEMPLATES["color_presence"] + TEMPLATES["shape_presence"] if " not " in t or t.startswith("is no ")
)
_SPLIT_CODE = {"train": 0, "test": 1}


# --------------------------------------------------------------------------------------------------- backgrounds
@dataclass(frozen=True)
class Photo:
    """A background photograph shipped inside a PyPI wheel.

    Attributes:
        name: short id, e.g. "astronaut".
        pypi: the PyPI distribution that ships it.
        module: the top-level import package whose folder holds the file.
        relpath: the file, relative to that folder.
        split: "train" or "test": the only split whose scenes use it.
        licence: as stated by the shipping package (see data/SCENES.md for the sources).
        sha256: of the file's bytes; another file under the same name raises instead of silently changing the set.
    """

    name: str
    pypi: str
    module: str
    relpath: str
    split: str
    licence: str
    sha256: str

    def path(self) -> Path:
        """The file inside the installed package (found without importing it); FileNotFoundError if absent."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"photo {self.name!r} ships in the PyPI package {self.pypi!r}, which is not "
                f"installed (pip install {self.pypi}); nothing is downloaded"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / self.relpath
        if not path.is_file():
            raise FileNotFoundError(
                f"photo {self.name!r} not found at {path} (package {self.pypi}); nothing is downloaded"
            )
        return path


PHOTOS: tuple[Photo, ...] = (
    Photo(
        "astronaut",
        "scikit-image",
        "skimage",
        "data/astronaut.png",
        "train",
        "public domain (NASA)",
        "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    ),
    Photo(
        "chelsea",
        "scikit-image",
        "skimage",
        "data/chelsea.png",
        "train",
        "CC0 (Stefan van der Walt)",
        "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
    ),
    Photo(
        "rocket",
        "scikit-image",
        "skimage",
        "data/rocket.jpg",
        "train",
        "public domain (SpaceX)",
        "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
    ),
    Photo(
        "china",
        "scikit-learn",
        "sklearn",
        "datasets/images/china.jpg",
        "train",
        "CC BY 2.0 (danielbuechele, Flickr)",
        "8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29",
    ),
    Photo(
        "grace_hopper",
        "matplotlib",
        "matplotlib",
        "mpl-data/sample_data/grace_hopper.jpg",
        "train",
        "not stated by matplotlib; US Navy portrait (public domain)",
        "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130",
    ),
    Photo(
        "coffee",
        "scikit-image",
        "skimage",
        "data/coffee.png",
        "test",
        "CC0 (Rachel Michetti)",
        "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
    ),
    Photo(
        "flower",
        "scikit-learn",
        "sklearn",
        "datasets/images/flower.jpg",
        "test",
        "CC BY 2.0 (vultilion, Flickr)",
        "a77f6ec41e353afdf8bdff2ea981b2955535d8d83294f8cfa49cf4e423dd5638",
    ),
)
_PHOTO = {p.name: p for p in PHOTOS}


@cache
def _photo_rgb(name: str) -> np.ndarray:
    """The decoded photo, uint8 [h, w, 3], read-only."""
    from PIL import Image

    photo = _PHOTO[name]
    data = photo.path().read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != photo.sha256:
        raise ValueError(
            f"photo {name!r} ({photo.pypi}) has sha256 {digest}, the scene set was defined on "
            f"{photo.sha256}: another version of the package ships another file; pin it or update "
            f"PHOTOS and the card"
        )
    with Image.open(io.BytesIO(data)) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    rgb.setflags(write=False)
    return rgb


@cache
def _photo_integral(name: str) -> np.ndarray:
    """Summed-area table of the photo, int64 [h + 1, w + 1, 3]: exact box means for the contrast check."""
    rgb = _photo_rgb(name).astype(np.int64)
    out = np.zeros((rgb.shape[0] + 1, rgb.shape[1] + 1, 3), dtype=np.int64)
    out[1:, 1:] = rgb.cumsum(0).cumsum(1)
    return out


# ------------------------------------------------------------------------------------------------ easy-vqa cut-outs
@dataclass(frozen=True, eq=False)
class _Cutout:
    """An easy-vqa shape lifted off its background: its palette colour and coverage alpha uint8 [h, w]."""

    vqa_id: int
    shape: str
    color: str
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1) in the 64x64 image: the pixels with alpha > 0
    alpha: np.ndarray


def _label(questions: Sequence[str], answers: Sequence[str], words: tuple[str, ...]) -> tuple[str | None, str]:
    """The one word of ``words`` the image's own answers establish, and how: ("direct"|"elimination"|reason).

    easyvqa.object_label reads a naming answer ("what is the blue shape? -> rectangle") or a "yes" to a positive
    question. Where none exists, negative answers may still leave one candidate ("is there a circle? -> no",
    "is no triangle present? -> yes" → rectangle). Any contradiction leaves the image unlabelled.
    """
    present: set[str] = set()
    absent: set[str] = set()
    for q, a in zip(questions, answers):
        tokens = set(q.rstrip("?").split())
        if a in words:
            present.add(a)
        for w in words:
            if w not in tokens:
                continue
            if a in ("yes", "no"):
                negated = bool(tokens & {"not", "no"})
                (present if (a == "yes") != negated else absent).add(w)
            else:  # "what color is the circle? -> red" presupposes a circle
                present.add(w)
    if present & absent or len(present) > 1:
        return None, "contradictory answers"
    if present:
        return next(iter(present)), "direct"
    left = [w for w in words if w not in absent]
    if len(left) == 1:
        return left[0], "elimination"
    return None, "not established by the answers"


@cache
def _easyvqa(split: str) -> dict[int, easyvqa.VQAImage]:
    return {item.image_id: item for item in easyvqa.load_split(split)}


@cache
def _labels(split: str) -> dict[int, tuple[str | None, str | None, str]]:
    """vqa id → (shape, colour, how): labels from the answers only (no pixels read)."""
    out = {}
    for vqa_id, item in _easyvqa(split).items():
        shape, how_s = _label(item.questions, item.answers, SHAPES)
        colour, how_c = _label(item.questions, item.answers, COLOURS)
        if shape is None or colour is None:
            how = how_s if shape is None else how_c
        else:
            how = "direct" if how_s == how_c == "direct" else "elimination"
        out[vqa_id] = (shape, colour, how)
    return out


@cache
def _pool(split: str) -> dict[tuple[str, str], tuple[int, ...]]:
    """(shape, colour) → the split's vqa ids labelled so by their answers, ascending."""
    pool: dict[tuple[str, str], list[int]] = {(s, c): [] for s in SHAPES for c in COLOURS}
    for vqa_id, (shape, colour, _) in sorted(_labels(split).items()):
        if shape is not None and colour is not None:
            pool[(shape, colour)].append(vqa_id)
    return {k: tuple(v) for k, v in pool.items()}


@cache
def _cut(split: str, vqa_id: int) -> _Cutout | str:
    """The cut-out, or why the image cannot give one.

    easy-vqa draws one shape in an exact palette colour on a flat background and anti-aliases its edge: every pixel
    lies on the segment background → colour. Alpha is the pixel's position along it (rounded to 1/255); pasting
    with it keeps the soft edge without a fringe of easy-vqa's background. Refused: shapes touching the image border
    (clipped), pixels off the segment (another colour than the label), and geometry that disagrees with the shape
    label (fill of the alpha ≥ 128 mask in its bounding box: rectangle ≥ 0.93, circle 0.70-0.93 and square box,
    triangle < 0.70; easy-vqa's own ranges are 0.956-1, 0.74-0.906 and 0.50-0.656).
    """
    shape, colour, _ = _labels(split)[vqa_id]
    if shape is None or colour is None:
        return "label not established"
    a = easyvqa.read_rgb(_easyvqa(split)[vqa_id].path).astype(np.int64)
    bg = a[0, 0]
    if not all((edge == bg).all() for edge in (a[0], a[-1], a[:, 0], a[:, -1])):
        return "touches the border"
    fg = np.array(PALETTE[colour], dtype=np.int64)
    d = fg - bg
    n2 = int(d @ d)
    if n2 < 3 * 64 * 64:
        return "too little contrast with its background"
    t = (a - bg) @ d  # [64, 64]
    alpha = np.clip((510 * t + n2) // (2 * n2), 0, 255)
    # Off-segment residual, x255: at most 3 grey levels per channel.
    if np.abs(255 * (a - bg) - alpha[..., None] * d).max() > 3 * 255:
        return "colour disagrees with the label"
    solid = alpha >= 128
    ys, xs = np.nonzero(solid)
    if ys.size < 16:
        return "too small"
    bw, bh = int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)
    fill = int(solid.sum()) / (bw * bh)
    geometric = (
        "rectangle"
        if fill >= 0.93
        else "circle"
        if fill >= 0.70 and abs(bw - bh) <= 1
        else "triangle"
        if fill < 0.70
        else "unknown"
    )
    if geometric != shape:
        return "geometry disagrees with the label"
    ys, xs = np.nonzero(alpha > 0)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    cropped = alpha[y0:y1, x0:x1].astype(np.uint8)
    cropped.setflags(write=False)
    return _Cutout(vqa_id, shape, colour, (x0, y0, x1, y1), cropped)


def audit_cutouts(split: str) -> dict[str, int]:
    """Counts over all of a split's easy-vqa images: how labels were established, and why images were refused."""
    _check_split(split)
    counts: Counter[str] = Counter()
    for vqa_id, (_, _, how) in sorted(_labels(split).items()):
        counts[f"labels: {how}"] += 1
        got = _cut(split, vqa_id)
        counts["usable" if isinstance(got, _Cutout) else f"refused: {got}"] += 1
    counts["images"] = len(_labels(split))
    return dict(sorted(counts.items()))


# ----------------------------------------------------------------------------------------------- integer imaging
def _taps(n_out: int, length: int, bits: int, inset: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps, pixel centres aligned: output i samples source inset + (i + ½)·n/n_out − ½, in 1/2**bits px,
    where n = length − 2·inset (the output spans the source less ``inset`` px of margin on each side).

    Returns:
        i0, i1: int64 [n_out] source indices; w1: int64 [n_out], the weight of i1 in 1/2**bits (i0 gets the rest).
    """
    one = 1 << bits
    n = length - 2 * inset
    s = ((2 * np.arange(n_out, dtype=np.int64) + 1) * (n << bits)) // (2 * n_out) - one // 2 + (inset << bits)
    s = np.clip(s, 0, (length - 1) << bits)
    i0 = s >> bits
    return i0, np.minimum(i0 + 1, length - 1), s - (i0 << bits)


def _resize_bilinear(
    src: np.ndarray, out_w: int, out_h: int, bits: int = 4, mirror: bool = False, inset: int = 0
) -> np.ndarray:
    """Fixed-point bilinear resize, uint8 [h, w(, c)] → uint8 [out_h, out_w(, c)]: integers only, bit-exact anywhere.

    Sample positions are quantised to 1/2**bits px: 4 bits (1/16 px, invisible at the 1-3.3x of the backgrounds)
    keeps every intermediate within uint16, twice as fast as 8 bits in uint32 (used for the alpha of cut-outs
    enlarged up to 15x). No anti-alias prefilter: meant for up-scaling and mild down-scaling.

    Args:
        mirror: return the result mirrored left-right (free: folded into the final cast).
        inset: the output spans the source less this margin, which only feeds the interpolation at the rim.
    """
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    dtype = np.uint16 if bits == 4 else np.uint32
    one = 1 << bits
    h, w = src.shape[:2]
    xi0, xi1, xw = _taps(out_w, w, bits, inset)
    yi0, yi1, yw = _taps(out_h, h, bits, inset)
    extra = (None,) * (src.ndim - 2)
    xw = xw.astype(dtype)[(slice(None),) + extra]
    yw = yw.astype(dtype)[(slice(None), None) + extra]
    # The taps ascend, so src[:, i] is np.repeat by the index counts: 3-4x faster than fancy indexing.
    wide = src.astype(dtype)
    rows = np.repeat(wide, np.bincount(xi0, minlength=w), axis=1)
    rows *= one - xw
    tmp = np.repeat(wide, np.bincount(xi1, minlength=w), axis=1)
    tmp *= xw
    rows += tmp  # ≤ 255·2**bits
    out = np.repeat(rows, np.bincount(yi0, minlength=h), axis=0)
    out *= one - yw
    tmp = np.repeat(rows, np.bincount(yi1, minlength=h), axis=0)
    tmp *= yw
    out += tmp  # ≤ 255·4**bits: within uint16 for 4 bits
    out += 1 << (2 * bits - 1)
    out >>= 2 * bits
    return (out[:, ::-1] if mirror else out).astype(np.uint8)


def _scale_alpha(alpha: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    """The cut-out's alpha at the pasted size, uint8 [out_h, out_w].

    Up-scaling (the usual case: cut-outs are 10-36 px, pasted 20-153 px): bilinear coverage, whose 128 level
    follows the anti-aliased outline to sub-pixel accuracy, then its slope steepened by the scale so the edge stays
    about one output pixel wide (blocky nearest-neighbour steps and a blurred rim both avoided). A 1-px margin of
    zeros around the cut-out feeds the interpolation at its rim: without it the half-covered edge rows of a
    rectangle would be stretched into a translucent band. Down-scaling: the mean of 4x4 nearest samples per output
    pixel (coverage).
    """
    h, w = alpha.shape
    if out_w >= w:
        up = _resize_bilinear(np.pad(alpha, 1), out_w, out_h, bits=8, inset=1).astype(np.int64)
        return np.clip(128 + ((up - 128) * out_w) // w, 0, 255).astype(np.uint8)
    s = 4
    xs = ((2 * np.arange(out_w * s) + 1) * w) // (2 * out_w * s)
    ys = ((2 * np.arange(out_h * s) + 1) * h) // (2 * out_h * s)
    g = alpha[ys[:, None], xs[None, :]].astype(np.uint32)
    return ((g.reshape(out_h, s, out_w, s).sum(axis=(1, 3)) + s * s // 2) // (s * s)).astype(np.uint8)


# --------------------------------------------------------------------------------------------------- scene specs
@dataclass(frozen=True)
class SceneObject:
    """One pasted easy-vqa shape.

    Attributes:
        vqa_id: easy-vqa image id (in the scene's split).
        shape, color: its labels (from easy-vqa's answers, checked against the pixels).
        box: (x0, y0, x1, y1) in frame pixels, end-exclusive: where the cut-out lands (its alpha > 0 box).
        source_box: (x0, y0, x1, y1) of the cut-out in the 64x64 easy-vqa image.
    """

    vqa_id: int
    shape: str
    color: str
    box: tuple[int, int, int, int]
    source_box: tuple[int, int, int, int]

    @property
    def scale(self) -> float:
        """Pasted width over cut-out width."""
        return (self.box[2] - self.box[0]) / (self.source_box[2] - self.source_box[0])


@dataclass(frozen=True)
class SceneItem:
    """One frame spec and its questions (the easyvqa.VQAImage interface: image_id, questions, answers, rgb()).

    Attributes:
        image_id: the scene's index in its split for this seed.
        split, seed: which stream it came from (``make_item(split, image_id, seed)`` rebuilds it).
        background: the photo's name (``PHOTOS``).
        crop: (x0, y0, x1, y1) in the photo, end-exclusive, resized to ``size``.
        flip: whether the resized crop is mirrored left-right (before the objects are pasted).
        size: (width, height) of the frame.
        objects: the pasted shapes; object k (0-based) is k + 1 in ``object_index()``.
        questions, answers, question_types: aligned; types are keys of ``TEMPLATES``.
    """

    image_id: int
    split: str
    seed: int
    background: str
    crop: tuple[int, int, int, int]
    flip: bool
    size: tuple[int, int]
    objects: tuple[SceneObject, ...]
    questions: tuple[str, ...]
    answers: tuple[str, ...]
    question_types: tuple[str, ...]

    @property
    def name(self) -> str:
        """A file stem: ``{split}_{seed}_{image_id:06d}``."""
        return f"{self.split}_{self.seed}_{self.image_id:06d}"

    def render(self) -> tuple[np.ndarray, np.ndarray]:
        """The frame and its object index map.

        Returns:
            rgb: uint8 [H, W, 3].
            index: uint8 [H, W]; 0 = background, k = objects[k - 1] (where its alpha ≥ 128).
        """
        width, height = self.size
        x0, y0, x1, y1 = self.crop
        frame = _resize_bilinear(_photo_rgb(self.background)[y0:y1, x0:x1], width, height, mirror=self.flip)
        index = np.zeros((height, width), dtype=np.uint8)
        for k, obj in enumerate(self.objects, start=1):
            cut = _cut(self.split, obj.vqa_id)
            assert isinstance(cut, _Cutout), cut
            bx0, by0, bx1, by1 = obj.box
            alpha = _scale_alpha(cut.alpha, bx1 - bx0, by1 - by0)
            a = alpha.astype(np.uint32)[..., None]
            region = frame[by0:by1, bx0:bx1].astype(np.uint32)
            colour = np.array(PALETTE[obj.color], dtype=np.uint32)
            frame[by0:by1, bx0:bx1] = ((region * (255 - a) + colour * a + 127) // 255).astype(np.uint8)
            index[by0:by1, bx0:bx1][alpha >= 128] = k
        return frame, index

    def rgb(self) -> np.ndarray:
        """The frame, uint8 [H, W, 3]."""
        return self.render()[0]

    def object_index(self) -> np.ndarray:
        """uint8 [H, W]: 0 = background, k = the k-th object (1-based), for per-patch labels."""
        return self.render()[1]


class _Draws:
    """Uniform integers from PCG64's raw stream (stable across NumPy versions), seeded by (seed, split, index)."""

    def __init__(self, seed: int, split: str, index: int) -> None:
        self._bits = np.random.PCG64([seed, _SPLIT_CODE[split], index])

    def below(self, n: int) -> int:
        """Uniform in [0, n) by rejection (no modulo bias)."""
        if n < 1:
            raise ValueError(f"n must be ≥ 1, got {n}")
        limit = (1 << 64) - (1 << 64) % n
        while True:
            r = int(self._bits.random_raw())
            if r < limit:
                return r % n

    def between(self, lo: int, hi: int) -> int:
        """Uniform in [lo, hi], both included."""
        return lo + self.below(hi - lo + 1)

    def choice(self, seq: Sequence):
        return seq[self.below(len(seq))]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def _draw_crop(draws: _Draws, photo_w: int, photo_h: int, width: int, height: int) -> tuple[int, int, int, int]:
    """A crop with the frame's aspect ratio (to a pixel), 60-100 % as wide as the widest such crop."""
    cw_max = min(photo_w, photo_h * width // height)
    cw = draws.between((cw_max * MIN_CROP_PCT + 99) // 100, cw_max)
    ch = min(photo_h, (cw * height + width // 2) // width)
    x0 = draws.between(0, photo_w - cw)
    y0 = draws.between(0, photo_h - ch)
    return x0, y0, x0 + cw, y0 + ch


def _contrast_ok(
    photo: str,
    crop: tuple[int, int, int, int],
    flip: bool,
    size: tuple[int, int],
    box: tuple[int, int, int, int],
    colour: str,
) -> bool:
    """Whether ``colour`` stands out from the photo's mean colour under ``box`` (mapped back into the photo)."""
    width, height = size
    cx0, cy0, cx1, cy1 = crop
    bx0, bx1 = (width - box[2], width - box[0]) if flip else (box[0], box[2])
    px0 = cx0 + bx0 * (cx1 - cx0) // width
    px1 = max(px0 + 1, cx0 + -(-bx1 * (cx1 - cx0) // width))
    py0 = cy0 + box[1] * (cy1 - cy0) // height
    py1 = max(py0 + 1, cy0 + -(-box[3] * (cy1 - cy0) // height))
    s = _photo_integral(photo)
    total = s[py1, px1] - s[py0, px1] - s[py1, px0] + s[py0, px0]  # int64 [3]
    area = (px1 - px0) * (py1 - py0)
    return int(np.abs(total - np.array(PALETTE[colour], dtype=np.int64) * area).sum()) >= CONTRAST_L1 * area


def _gap(width: int) -> int:
    """Minimum free space between two objects' boxes (20 px at 1280, 10 px at 640)."""
    return width // 64


def _draw_object(
    draws: _Draws,
    split: str,
    photo: str,
    crop: tuple[int, int, int, int],
    flip: bool,
    size: tuple[int, int],
    placed: list[SceneObject],
) -> SceneObject:
    """Shape and colour uniform, an easy-vqa image with those labels, a width, a free and contrasting place."""
    width, height = size
    w_min = (MIN_OBJECT_PCT * width + 99) // 100
    w_max = MAX_OBJECT_PCT * width // 100
    gap = _gap(width)
    for _ in range(100):
        shape, colour = draws.choice(SHAPES), draws.choice(COLOURS)
        ids = _pool(split)[(shape, colour)]
        for _ in range(100):  # rejection keeps the choice uniform over the usable images
            cut = _cut(split, draws.choice(ids))
            if isinstance(cut, _Cutout):
                break
        else:
            continue
        cw, ch = cut.alpha.shape[1], cut.alpha.shape[0]
        tw_max = min(w_max, (w_max * cw) // ch)  # tall cut-outs: the height stays ≤ 12 % of the width too
        if tw_max < w_min:
            continue
        tw = draws.between(w_min, tw_max)
        th = max(1, (tw * ch + cw // 2) // cw)
        for _ in range(30):
            x0, y0 = draws.between(0, width - tw), draws.between(0, height - th)
            box = (x0, y0, x0 + tw, y0 + th)
            if any(
                box[0] < o.box[2] + gap
                and o.box[0] < box[2] + gap
                and box[1] < o.box[3] + gap
                and o.box[1] < box[3] + gap
                for o in placed
            ):
                continue
            if not _contrast_ok(photo, crop, flip, size, box, colour):
                continue
            return SceneObject(cut.vqa_id, shape, colour, box, cut.box)
    raise RuntimeError(f"no place found for an object in {split} scene on {photo}")  # not reached in practice


# ------------------------------------------------------------------------------------------------------ questions
def _refs(objects: Sequence[SceneObject], k: int) -> list[str]:
    """The references that name object k and no other: "{shape}", "{color} shape", "{color} {shape}"."""
    o = objects[k]
    forms = []
    if sum(p.shape == o.shape for p in objects) == 1:
        forms.append(o.shape)
    if sum(p.color == o.color for p in objects) == 1:
        forms.append(f"{o.color} shape")
    if sum(p.shape == o.shape and p.color == o.color for p in objects) == 1:
        forms.append(f"{o.color} {o.shape}")
    return forms


def _ask_presence(draws: _Draws, objects: Sequence[SceneObject], qtype: str) -> tuple[str, str]:
    """Template first, then yes/no at 50 %, then a word that makes it so: no template leans towards an answer."""
    field, words = ("color", COLOURS) if qtype == "color_presence" else ("shape", SHAPES)
    template = draws.choice(TEMPLATES[qtype])
    negated = template in _NEGATED
    yes = draws.below(2) == 0
    present = [w for w in words if any(getattr(o, field) == w for o in objects)]
    absent = [w for w in words if w not in present]
    if not absent and yes == negated:  # all three shapes present: "absent" cannot be asked
        yes = not yes
    pool = present if yes != negated else absent
    return template.format(**{field: draws.choice(pool)}), "yes" if yes else "no"


def _ask_attribute(draws: _Draws, objects: Sequence[SceneObject], qtype: str) -> tuple[str, str] | None:
    """What shape / what colour: of the only object, or of the one object with the named colour / shape."""
    key, asked = ("color", "shape") if qtype == "shape" else ("shape", "color")
    options = []
    for template in TEMPLATES[qtype]:
        if "{" not in template:
            if len(objects) == 1:
                options.append((template, objects[0]))
        else:
            uniq = [o for o in objects if sum(getattr(p, key) == getattr(o, key) for p in objects) == 1]
            options.extend((template, o) for o in uniq)
    if not options:
        return None
    templates = sorted({t for t, _ in options}, key=TEMPLATES[qtype].index)
    template = draws.choice(templates)
    obj = draws.choice([o for t, o in options if t == template])
    return template.format(**{key: getattr(obj, key)}), getattr(obj, asked)


def _side(box: tuple[int, int, int, int], width: int) -> str | None:
    half = width // 2
    return "left" if box[2] <= half else "right" if box[0] >= half else None


def _left_of(a: SceneObject, b: SceneObject) -> bool | None:
    """True if a's columns all lie left of b's, False if all right, None if their column ranges overlap."""
    return True if a.box[2] <= b.box[0] else False if b.box[2] <= a.box[0] else None


def _ask_position(draws: _Draws, objects: Sequence[SceneObject], width: int, qtype: str) -> tuple[str, str] | None:
    """Left/right questions: template, then the answer at 50 %, then objects (and references) that make it so."""
    n = len(objects)
    refs = [_refs(objects, k) for k in range(n)]
    pairs = [
        (i, j)
        for i in range(n)
        for j in range(n)
        if i != j and refs[i] and refs[j] and _left_of(objects[i], objects[j]) is not None
    ]
    # candidates[template] = [(answer, a, b | None)]
    candidates: dict[str, list[tuple[str, int, int | None]]] = {}
    for template in TEMPLATES[qtype]:
        rows = []
        if "{b}" not in template:
            rows = [(side, k, None) for k in range(n) if refs[k] and (side := _side(objects[k].box, width))]
        else:
            for i, j in pairs:
                left = _left_of(objects[i], objects[j])
                if qtype == "side":
                    rows.append(("left" if left else "right", i, j))
                else:
                    rows.append(("yes" if left == ("to the left" in template) else "no", i, j))
        if rows:
            candidates[template] = rows
    if not candidates:
        return None
    template = draws.choice([t for t in TEMPLATES[qtype] if t in candidates])
    rows = candidates[template]
    answers = SIDES if qtype == "side" else ("yes", "no")
    want = answers[draws.below(2)]
    rows = [r for r in rows if r[0] == want] or rows
    answer, i, j = draws.choice(rows)
    fields = {"a": draws.choice(refs[i])}
    if j is not None:
        fields["b"] = draws.choice(refs[j])
    return template.format(**fields), answer


def _ask(draws: _Draws, objects: Sequence[SceneObject], width: int) -> list[tuple[str, str, str]]:
    """One question per type where the scene allows one, in QUESTION_TYPES order: (question, answer, type)."""
    out = []
    for qtype in QUESTION_TYPES:
        if qtype in ("color_presence", "shape_presence"):
            qa = _ask_presence(draws, objects, qtype)
        elif qtype in ("shape", "color"):
            qa = _ask_attribute(draws, objects, qtype)
        elif qtype == "count":
            qa = draws.choice(TEMPLATES["count"]), COUNT_WORDS[len(objects) - 1]
        else:
            qa = _ask_position(draws, objects, width, qtype)
        if qa is not None:
            out.append((qa[0], qa[1], qtype))
    return out


# ------------------------------------------------------------------------------------------------------------ API
def make_item(split: str, index: int, seed: int = 0, sizes: Sequence[tuple[int, int]] = FRAME_SIZES) -> SceneItem:
    """Scene ``index`` of a split, independent of any other scene.

    Args:
        split: "train" or "test".
        index: ≥ 0.
        seed: ≥ 0; the same (split, index, seed, sizes) always gives the same scene, in any process.
        sizes: frame sizes (width, height) to draw from uniformly; ``FRAME_SIZES`` by default.

    Returns:
        the SceneItem (a spec; ``rgb()`` renders it).
    """
    _check_split(split)
    for name, value in (("index", index), ("seed", seed)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    sizes = tuple((int(w), int(h)) for w, h in sizes)
    if not sizes or any(w < 64 or h < 64 for w, h in sizes):
        raise ValueError(f"sizes must be (width, height) pairs of at least 64 px, got {sizes!r}")
    draws = _Draws(int(seed), split, int(index))
    photo = draws.choice([p.name for p in PHOTOS if p.split == split])
    size = draws.choice(sizes)
    photo_h, photo_w = _photo_rgb(photo).shape[:2]
    crop = _draw_crop(draws, photo_w, photo_h, *size)
    flip = draws.below(2) == 1
    objects: list[SceneObject] = []
    for _ in range(draws.between(1, MAX_OBJECTS)):
        objects.append(_draw_object(draws, split, photo, crop, flip, size, objects))
    qa = _ask(draws, objects, size[0])
    return SceneItem(
        int(index),
        split,
        int(seed),
        photo,
        crop,
        flip,
        size,
        tuple(objects),
        tuple(q for q, _, _ in qa),
        tuple(a for _, a, _ in qa),
        tuple(t for _, _, t in qa),
    )


def load_split(
    split: str,
    n_images: int | None = None,
    seed: int = 0,
    *,
    limit: int | None = None,
    sizes: Sequence[tuple[int, int]] = FRAME_SIZES,
) -> list[SceneItem]:
    """The first scenes of a split, in index order.

    Args:
        split: "train" or "test".
        n_images: how many scenes; None: ``DEFAULT_IMAGES[split]``.
        seed: the stream (see ``make_item``).
        limit: keep only the first ``limit`` questions (image-major, as easyvqa.load_split: the last scene may keep
            only some of its questions); None keeps all.
        sizes: frame sizes to draw from.

    Returns:
        list of SceneItem, image_id 0, 1, ...
    """
    _check_split(split)
    n_images = DEFAULT_IMAGES[split] if n_images is None else n_images
    if not isinstance(n_images, int) or isinstance(n_images, bool) or n_images < 1:
        raise ValueError(f"n_images must be a positive int, got {n_images!r}")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    out: list[SceneItem] = []
    remaining = limit
    for index in range(n_images):
        item = make_item(split, index, seed, sizes)
        if remaining is not None:
            keep = min(remaining, len(item.questions))
            if keep < len(item.questions):
                item = replace(
                    item,
                    questions=item.questions[:keep],
                    answers=item.answers[:keep],
                    question_types=item.question_types[:keep],
                )
            remaining -= keep
        out.append(item)
        if remaining is not None and remaining <= 0:
            break
    return out


def num_questions(items: Sequence[SceneItem]) -> int:
    """Total number of questions over the scenes."""
    return sum(len(item.questions) for item in items)


def answer_balance(items: Sequence[SceneItem]) -> dict[str, dict[str, int]]:
    """question type → answer → count, types in QUESTION_TYPES order and answers in ANSWERS order."""
    counts: dict[str, Counter[str]] = {t: Counter() for t in QUESTION_TYPES}
    for item in items:
        for a, t in zip(item.answers, item.question_types):
            counts[t][a] += 1
    return {t: {a: c[a] for a in ANSWERS if c[a]} for t, c in counts.items()}


def _spec_json(item: SceneItem) -> dict:
    return {
        "image_id": item.image_id,
        "split": item.split,
        "seed": item.seed,
        "background": item.background,
        "crop": list(item.crop),
        "flip": item.flip,
        "size": list(item.size),
        "objects": [
            {
                "vqa_id": o.vqa_id,
                "shape": o.shape,
                "color": o.color,
                "box": list(o.box),
                "source_box": list(o.source_box),
            }
            for o in item.objects
        ],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: render scenes to PNGs with questions.jsonl, llava.json (LLaVA instruction format) and scenes.jsonl."""
    parser = argparse.ArgumentParser(prog="python -m tofc_ros.data.scenes", description=main.__doc__)
    parser.add_argument("--split", choices=SPLITS, required=True)
    parser.add_argument("--n", type=int, default=20, help="number of scenes (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--size",
        choices=["mixed"] + [f"{w}x{h}" for w, h in FRAME_SIZES],
        default="mixed",
        help="frame size (default: drawn per scene from both)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    args = parser.parse_args(argv)
    sizes = FRAME_SIZES if args.size == "mixed" else (tuple(int(v) for v in args.size.split("x")),)
    try:
        items = load_split(args.split, args.n, args.seed, sizes=sizes)
    except (ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))
    from PIL import Image

    (args.out / "images").mkdir(parents=True, exist_ok=True)
    llava = []
    with open(args.out / "questions.jsonl", "w") as qf, open(args.out / "scenes.jsonl", "w") as sf:
        for item in items:
            image = f"images/{item.name}.png"
            Image.fromarray(item.rgb()).save(args.out / image)
            sf.write(json.dumps({"image": image, **_spec_json(item)}) + "\n")
            for j, (q, a, t) in enumerate(zip(item.questions, item.answers, item.question_types)):
                qf.write(json.dumps({"image": image, "question": q, "answer": a, "question_type": t}) + "\n")
                llava.append(
                    {
                        "id": f"{item.name}_q{j}",
                        "image": image,
                        "conversations": [{"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": a}],
                    }
                )
    (args.out / "llava.json").write_text(json.dumps(llava, indent=1) + "\n")
    print(f"{len(items)} scenes, {len(llava)} questions → {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
