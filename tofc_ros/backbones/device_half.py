"""Device half: RGB image → tiles → vision tower up to the feature layer → per-tile features [T, n_v, d].

    rgb uint8 [H, W, 3]
      │ image processor (PIL backend): OneVision anyres grid (rows×cols tiles of 384²) + 384² thumbnail,
      │                                LLaVA-1.5 pad-to-square + resize to 336²
      ▼
    pixel_values [T, 3, S, S]
      │ embeddings (+ CLIP pre-layernorm) → encoder layers 1..k   (k = layers the feature layer needs; the rest of
      │                                                            the tower, post-layernorm and heads, never run)
      ▼ selection: "full" keeps all tokens, "default" drops CLS
    features [T, n_v, d]    (+ grid (rows, cols), image size (H, W))  → FMM merge → entropy coder → uplink

With ``split_layer`` X below the feature layer (AlignedVQ), only layers 1..X run and the features are the hidden state
after layer X, [T, N, d] with every token (``vision_split``); the server runs the rest of the tower.

No language model is loaded or touched here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .spec import BackboneSpec
from .vision_split import check_split_layer, run_prefix

__all__ = ["VisionFeatures", "DeviceHalf", "validate_rgb"]

# A guard against absurd inputs (a 20k-pixel side already means > 1 GB of tiles for OneVision).
MAX_IMAGE_SIDE = 20000


@dataclass(frozen=True, eq=False)
class VisionFeatures:
    """What the device sends (before merging/compression) and what the server needs to rebuild the prompt.

    Attributes:
        features: [T, n, d] per-tile vision features (n = n_v before merging, n_c after).
        grid: (rows, cols) of the anyres grid; (1, 1) for LLaVA-1.5.
        image_size: (height, width) of the original image in pixels.
    """

    features: torch.Tensor
    grid: tuple[int, int]
    image_size: tuple[int, int]

    @property
    def n_tiles(self) -> int:
        """T."""
        return int(self.features.shape[0])

    @property
    def tokens_per_tile(self) -> int:
        """n."""
        return int(self.features.shape[1])

    @property
    def dim(self) -> int:
        """d."""
        return int(self.features.shape[2])

    def with_features(self, features: torch.Tensor) -> VisionFeatures:
        """Same grid and image size, other per-tile features (e.g. merged [T, n_c, d])."""
        return VisionFeatures(features=features, grid=self.grid, image_size=self.image_size)


def validate_rgb(rgb) -> np.ndarray:
    """Check an RGB image: numpy uint8 [H, W, 3], H, W ≥ 1. Returns it C-contiguous.

    Raises:
        TypeError: not a numpy array, or not uint8.
        ValueError: wrong number of dimensions or channels, empty, or a side above MAX_IMAGE_SIDE.
    """
    if not isinstance(rgb, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(rgb).__name__}")
    if rgb.dtype != np.uint8:
        raise TypeError(f"image must be uint8, got {rgb.dtype}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"image must have shape [H, W, 3] (RGB), got {rgb.shape}")
    h, w = rgb.shape[:2]
    if h < 1 or w < 1:
        raise ValueError(f"image must be non-empty, got {rgb.shape}")
    if max(h, w) > MAX_IMAGE_SIDE:
        raise ValueError(f"image side {max(h, w)} exceeds {MAX_IMAGE_SIDE}")
    return np.ascontiguousarray(rgb)


class DeviceHalf:
    """Image processor + truncated vision tower. Build with ``loading.load_device_half``.

    Args:
        spec: the checkpoint's BackboneSpec.
        vision_tower: the vision transformer core truncated to ``spec.vision_layers_needed`` layers, without
            post-layernorm (as built by ``loading.build_vision_tower``).
        image_processor: the checkpoint's PIL image processor.
        dtype: compute dtype (the features come out in it).
        device: where the tower lives.
        tiles_per_batch: at most this many tiles per forward pass (None: all at once).
        fingerprint: ``loading.backbone_fingerprint`` of the checkpoint (goes into CompressedFeatures).
        split_layer: encoder layers to run (None: up to the feature layer, TOFC's split). Fewer stops inside the
            tower (AlignedVQ): the features are then the hidden state after that layer, every token kept
            (``vision_split``).
    """

    def __init__(
        self,
        spec: BackboneSpec,
        vision_tower,
        image_processor,
        *,
        dtype,
        device,
        tiles_per_batch=None,
        fingerprint: str = "",
        split_layer: int | None = None,
    ):
        if tiles_per_batch is not None and tiles_per_batch < 1:
            raise ValueError(f"tiles_per_batch must be ≥ 1 or None, got {tiles_per_batch}")
        self.spec = spec
        self.vision_tower = vision_tower
        self.image_processor = image_processor
        self.dtype = dtype
        self.device = torch.device(device)
        self.tiles_per_batch = tiles_per_batch
        self.fingerprint = fingerprint
        self.split_layer = spec.vision_layers_needed if split_layer is None else check_split_layer(spec, split_layer)

    def preprocess(self, rgb: np.ndarray) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
        """Tile and normalise an image.

        Args:
            rgb: uint8 [H, W, 3].

        Returns:
            (pixel_values [T, 3, S, S] in the compute dtype on the device, grid (rows, cols), image_size (H, W)).
        """
        rgb = validate_rgb(rgb)
        image_size = (int(rgb.shape[0]), int(rgb.shape[1]))
        # input_data_format is explicit: a 1×1 or 3-pixel-tall image would otherwise be guessed channels-first.
        out = self.image_processor(images=[rgb], return_tensors="pt", input_data_format="channels_last")
        pixel_values = out["pixel_values"]
        if pixel_values.dim() == 5:  # OneVision: [batch=1, T, 3, S, S]
            pixel_values = pixel_values[0]
        grid = self.spec.tile_grid(image_size)
        n_tiles = self.spec.num_tiles(grid)
        if pixel_values.shape[0] != n_tiles or pixel_values.shape[-1] != self.spec.tile_size:
            raise RuntimeError(
                f"image processor produced {tuple(pixel_values.shape)}; expected {n_tiles} tiles of "
                f"{self.spec.tile_size}² for grid {grid} (is preprocessor_config.json consistent with config.json?)"
            )
        return pixel_values.to(self.device, self.dtype), grid, image_size

    # no_grad rather than inference_mode: the trainer feeds these features into a trainable codec, and inference
    # tensors cannot be saved for backward.
    @torch.no_grad()
    def encode_pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Vision tower up to the feature layer plus selection: [T, 3, S, S] → [T, n_v, d] (no gradients)."""
        if pixel_values.dim() != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"pixel_values must be [T, 3, S, S], got {tuple(pixel_values.shape)}")
        pixel_values = pixel_values.to(self.device, self.dtype)
        step = self.tiles_per_batch or pixel_values.shape[0]
        chunks = [self.vision_features(pixel_values[i : i + step]) for i in range(0, pixel_values.shape[0], step)]
        return torch.cat(chunks, dim=0)

    def encode_image(self, rgb: np.ndarray) -> VisionFeatures:
        """RGB uint8 [H, W, 3] → VisionFeatures(features [T, n_v, d], grid, image_size)."""
        pixel_values, grid, image_size = self.preprocess(rgb)
        return VisionFeatures(features=self.encode_pixels(pixel_values), grid=grid, image_size=image_size)

    def vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The device computation itself, gradient-enabled (for training): [T, 3, S, S] → [T, n, d].

        At the feature layer: equal to ``vision_tower(pixel_values, output_hidden_states=True)
        .hidden_states[vision_feature_layer]`` plus the selection, but stopped at that layer. With a split inside
        the tower: that tuple's entry ``split_layer``, every token. Works on the truncated tower the loader builds
        and on a full tower (e.g. the trainer's whole model): later layers, post-layernorm and pooling heads are
        never run either way (``vision_split.run_prefix``).
        """
        return run_prefix(self.spec, self.vision_tower, pixel_values, self.split_layer)
