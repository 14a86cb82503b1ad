"""Where the vision tower is cut, and the two pieces on either side of the cut.

A split layer X (0 ≤ X ≤ k, k = ``spec.vision_layers_needed``) says how many encoder layers the device runs::

    pixels ─ embeddings (+ CLIP pre-layernorm) ─ layers 1..X ─►  hidden [T, N, d]      (device: run_prefix)
                                                                 │ X < k: the residual stream, every token (CLS too)
             hidden ─ layers X+1..k ─ selection (drop CLS) ─►  features [T, n_v, d]  (server: VisionTail)

X = k is TOFC's split (after the feature layer; the tail is empty and the device applies the selection itself).
X < k is AlignedVQ's split inside the tower: what crosses the link is the residual stream after block X, which is
exactly the input of block X+1 (its first LayerNorm normalises it; the codec quantises that normalised activation).
Post-layernorm and pooling heads never run: LLaVA reads the hidden state of the feature layer.

Dimension letters: T tiles, N tokens per tile at the split (patches, + CLS for CLIP), n_v tokens after selection,
d the vision width.
"""

from __future__ import annotations

import torch

from .spec import BackboneSpec

__all__ = ["check_split_layer", "leading_cls", "tokens_at_split", "run_prefix", "select_tokens", "VisionTail"]


def check_split_layer(spec: BackboneSpec, split_layer: int) -> int:
    """Validate a split layer against the spec (0 ≤ X ≤ vision_layers_needed) and return it as an int.

    Raises:
        TypeError: not an int. ValueError: out of range.
    """
    if isinstance(split_layer, bool) or not isinstance(split_layer, int):
        raise TypeError(f"split_layer must be an int, got {type(split_layer).__name__}")
    if not 0 <= split_layer <= spec.vision_layers_needed:
        raise ValueError(
            f"split_layer {split_layer} is outside 0..{spec.vision_layers_needed} "
            f"(the encoder layers up to the feature layer {spec.vision_feature_layer})"
        )
    return split_layer


def leading_cls(spec: BackboneSpec) -> int:
    """1 if the tower's tokens start with a CLS token that the selection drops (LLaVA-1.5), else 0."""
    return 1 if spec.select_strategy == "default" else 0


def tokens_at_split(spec: BackboneSpec, split_layer: int) -> int:
    """N, tokens per tile in the hidden state after ``split_layer`` layers: n_v at the feature layer, else every
    token the embeddings make (patches, plus CLIP's CLS, which only the final selection drops)."""
    if check_split_layer(spec, split_layer) == spec.vision_layers_needed:
        return spec.tokens_per_tile
    return spec.tokens_per_tile + leading_cls(spec)


def select_tokens(spec: BackboneSpec, hidden: torch.Tensor) -> torch.Tensor:
    """LLaVA's feature selection on the feature layer's hidden state: "default" drops the first token (CLS)."""
    return hidden[:, 1:] if spec.select_strategy == "default" else hidden


def run_prefix(spec: BackboneSpec, core, pixel_values: torch.Tensor, split_layer: int) -> torch.Tensor:
    """The device's part of the tower: [T, 3, S, S] → [T, N, d] (gradient-enabled; callers choose no_grad).

    ``core`` is a vision transformer core (SigLIP / CLIP ``vision_model``) with at least ``split_layer`` layers: the
    truncated tower the loader builds, or a full tower (the trainer's model), whose later layers never run. At the
    feature layer the selection is applied, so the result is what the projector takes.
    """
    check_split_layer(spec, split_layer)
    layers = core.encoder.layers
    if len(layers) < split_layer:
        raise ValueError(f"vision tower has {len(layers)} layers; the split needs {split_layer}")
    hidden = core.embeddings(pixel_values)
    if hasattr(core, "pre_layrnorm"):
        hidden = core.pre_layrnorm(hidden)
    for layer in layers[:split_layer]:
        hidden = layer(hidden, None)  # no attention mask: every tile is a full image
    if split_layer == spec.vision_layers_needed:
        hidden = select_tokens(spec, hidden)
    return hidden


class VisionTail(torch.nn.Module):
    """The server's part of the tower for one split: layers X+1..k, then the selection.

    Args:
        spec: the checkpoint's BackboneSpec.
        split_layer: X, the layers the device ran (< k; at k there is no tail).
        layers: the encoder layers X+1..k, in order (``loading.build_vision_tail`` loads them from a checkpoint;
            the trainer passes a slice of its own tower so that serving and training run the same modules).
    """

    def __init__(self, spec: BackboneSpec, split_layer: int, layers) -> None:
        super().__init__()
        check_split_layer(spec, split_layer)
        if split_layer == spec.vision_layers_needed:
            raise ValueError("a split at the feature layer has no vision tail")
        expected = spec.vision_layers_needed - split_layer
        if len(layers) != expected:
            raise ValueError(f"a tail after layer {split_layer} has {expected} layers, got {len(layers)}")
        self.spec = spec
        self.split_layer = split_layer
        self.tokens_in = tokens_at_split(spec, split_layer)
        self.cls = leading_cls(spec)  # a CLS token leads (and is dropped at the end)
        self.layers = torch.nn.ModuleList(layers)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """[T, N, d] hidden state after layer X → [T, N − CLS, d] features of the feature layer.

        N is every token (``tokens_in``), or fewer when the device merged them after the split (CLS kept first):
        attention takes any number of tokens, and the features then count as merged (n < n_v).
        """
        lo = self.cls + 1
        if hidden.dim() != 3 or not lo <= hidden.shape[1] <= self.tokens_in or hidden.shape[2] != self.spec.vision_dim:
            raise ValueError(
                f"hidden state after layer {self.split_layer} must be [T, N, {self.spec.vision_dim}] with "
                f"{lo} <= N <= {self.tokens_in}, got {tuple(hidden.shape)}"
            )
        for layer in self.layers:
            hidden = layer(hidden, None)
        return select_tokens(self.spec, hidden)
