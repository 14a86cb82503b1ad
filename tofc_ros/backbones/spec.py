"""What the split needs to know about a LLaVA checkpoint, read once from its config.

Dimension legend used across ``tofc_ros.backbones``:
    T  tiles per image (OneVision: 1 thumbnail + rows·cols grid tiles; LLaVA-1.5: 1)
    n  tokens per tile as sent (n_v = full vision tokens per tile, n_c = merged tokens per tile, n_c ≤ n_v)
    d  vision feature width (SigLIP-SO400M: 1152, CLIP-L: 1024)
    D  language-model width (Qwen2-0.5B: 896)
    M  image tokens in the prompt (after arrangement and newline embeddings)
    L  prompt length in tokens, V vocabulary size
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["BackboneSpec", "SUPPORTED_MODEL_TYPES"]

Family = Literal["onevision", "llava"]

# model_type in config.json → our family name. LLaVA-1.5 checkpoints are "llava"; OneVision ones "llava_onevision".
SUPPORTED_MODEL_TYPES: dict[str, Family] = {"llava_onevision": "onevision", "llava": "llava"}

# Vision towers whose embeddings prepend a CLS token ("default" selection drops it).
_CLS_VISION_TYPES = frozenset({"clip_vision_model"})


@dataclass(frozen=True)
class BackboneSpec:
    """Split-relevant facts of one LLaVA checkpoint (immutable, cheap to pass around).

    Attributes:
        family: "onevision" (anyres tiles + thumbnail, image_newline) or "llava" (one tile, no newline).
        model_type: the config's model_type.
        vision_feature_layer: index into the vision tower's hidden states (−1 OneVision, −2 LLaVA-1.5).
        vision_layers_total: encoder layers in the checkpoint's vision tower.
        vision_layers_needed: encoder layers actually run on the device (later ones are never computed).
        select_strategy: "full" (keep every token) or "default" (drop the first token, CLIP's CLS).
        tile_size: vision input side in pixels (384 SigLIP, 336 CLIP-L/336).
        patch_size: vision patch side in pixels (14).
        patches_per_side: tile_size // patch_size (27 or 24).
        tokens_per_tile: n_v, vision tokens per tile after selection (729 or 576).
        vision_dim: d.
        text_dim: D.
        image_token_id: the placeholder id expanded to M tokens in the prompt.
        grid_pinpoints: anyres candidate resolutions (height, width) in pixels; empty for "llava".
        vision_aspect_ratio: OneVision's "anyres_max_K" (the reference packing downsamples past K tiles' worth).
    """

    family: Family
    model_type: str
    vision_feature_layer: int
    vision_layers_total: int
    vision_layers_needed: int
    select_strategy: str
    tile_size: int
    patch_size: int
    patches_per_side: int
    tokens_per_tile: int
    vision_dim: int
    text_dim: int
    image_token_id: int
    grid_pinpoints: tuple[tuple[int, int], ...]
    vision_aspect_ratio: str | None

    @classmethod
    def from_config(cls, config) -> BackboneSpec:
        """Read the spec from a ``LlavaOnevisionConfig`` or ``LlavaConfig``.

        Raises:
            ValueError: unsupported model type, a list-valued vision_feature_layer (multi-layer concatenation is not
                used by LLaVA-OneVision or LLaVA-1.5 and is not supported by the split), or an unknown strategy.
        """
        model_type = getattr(config, "model_type", None)
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"unsupported model_type {model_type!r}; expected one of {sorted(SUPPORTED_MODEL_TYPES)}")
        family = SUPPORTED_MODEL_TYPES[model_type]
        layer = config.vision_feature_layer
        if not isinstance(layer, int):
            raise ValueError(f"vision_feature_layer must be a single int, got {layer!r}")
        strategy = config.vision_feature_select_strategy
        if strategy not in ("full", "default"):
            raise ValueError(f"vision_feature_select_strategy must be 'full' or 'default', got {strategy!r}")
        vcfg = config.vision_config
        total = int(vcfg.num_hidden_layers)
        # hidden_states has total + 1 entries (embeddings output first), so entry i is the output of layer i.
        index = layer if layer >= 0 else total + 1 + layer
        if not 0 <= index <= total:
            raise ValueError(f"vision_feature_layer {layer} out of range for a {total}-layer vision tower")
        side = int(vcfg.image_size) // int(vcfg.patch_size)
        has_cls = getattr(vcfg, "model_type", "") in _CLS_VISION_TYPES
        n_v = side * side + (1 if has_cls else 0) - (1 if strategy == "default" else 0)
        pinpoints: tuple[tuple[int, int], ...] = ()
        if family == "onevision":
            pinpoints = tuple((int(h), int(w)) for h, w in config.image_grid_pinpoints)
        return cls(
            family=family,
            model_type=model_type,
            vision_feature_layer=layer,
            vision_layers_total=total,
            vision_layers_needed=index,
            select_strategy=strategy,
            tile_size=int(vcfg.image_size),
            patch_size=int(vcfg.patch_size),
            patches_per_side=side,
            tokens_per_tile=n_v,
            vision_dim=int(vcfg.hidden_size),
            text_dim=int(config.text_config.hidden_size),
            image_token_id=int(config.image_token_id),
            grid_pinpoints=pinpoints,
            vision_aspect_ratio=getattr(config, "vision_aspect_ratio", None) if family == "onevision" else None,
        )

    def tile_grid(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """Grid (rows, cols) of anyres tiles for an image of (height, width); (1, 1) for LLaVA-1.5.

        Uses transformers' own ``select_best_resolution`` so the device and the reference processor agree.
        """
        h, w = _check_hw(image_size)
        if self.family == "llava":
            return (1, 1)
        from transformers.image_processing_utils import select_best_resolution

        best_h, best_w = select_best_resolution((h, w), [list(p) for p in self.grid_pinpoints])
        return (best_h // self.tile_size, best_w // self.tile_size)

    def num_tiles(self, grid: tuple[int, int]) -> int:
        """T for a grid: thumbnail + rows·cols for OneVision, 1 for LLaVA-1.5."""
        rows, cols = grid
        return 1 + rows * cols if self.family == "onevision" else 1


def _check_hw(image_size) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise TypeError(f"image_size must be a pair (height, width) of ints, got {image_size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"image_size must be positive, got {(h, w)}")
    return h, w
