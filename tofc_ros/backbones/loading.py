"""Load one half of a llava-hf checkpoint without materialising the other half.

Why not ``from_pretrained`` + delete: that allocates (and on CPU, initialises) the whole model first, so the robot would
briefly hold the LLM and the server the vision tower. Instead we read config.json, build only the submodules a half
needs (``AutoModel.from_config`` under ``no_init_weights``, directly in the target dtype and on the target device) and
copy in only their tensors from the safetensors file(s), one tensor at a time. Peak memory is therefore about the size
of that half's parameters in the target dtype plus one tensor (safetensors files are memory-mapped, not read whole).

Checkpoint key layouts handled (all map to one canonical form):
    legacy llava-hf          vision_tower.vision_model.X, multi_modal_projector.X, language_model.model.X,
                             language_model.lm_head.weight, image_newline
    transformers ≥ 4.52      model.vision_tower.X, model.multi_modal_projector.X, model.language_model.X,
                             lm_head.weight, model.image_newline
    transformers 5 save      vision_tower.X, language_model.model.X, ... (legacy prefixes, no vision_model.)
    canonical                vision_tower.X, multi_modal_projector.X, language_model.X, lm_head.weight, image_newline

Only safetensors are read: pickled ``.bin`` checkpoints are refused (never unpickle a file we did not write).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from pathlib import Path

import torch

from .spec import SUPPORTED_MODEL_TYPES, BackboneSpec

__all__ = [
    "resolve_model_dir",
    "parse_dtype",
    "load_config",
    "CheckpointReader",
    "backbone_fingerprint",
    "build_module",
    "load_device_half",
    "load_server_half",
]

_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}
_TOP_LEVEL = ("vision_tower", "multi_modal_projector", "language_model", "image_newline", "lm_head")


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """'fp32'/'float32', 'bf16'/'bfloat16', 'fp16'/'float16' or a torch.dtype of those → torch.dtype."""
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
        return dtype
    if not isinstance(dtype, str) or dtype.lower() not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype.lower()]


def parse_device(device: str | torch.device) -> torch.device:
    """'cpu', 'cuda' or 'cuda:N' → torch.device; a CUDA device must exist."""
    dev = torch.device(device)
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def resolve_model_dir(model: str | os.PathLike, allow_network: bool = False) -> Path:
    """Local directory of a checkpoint.

    Args:
        model: a local directory in llava-hf layout, or a hub id such as "llava-hf/llava-onevision-qwen2-0.5b-ov-hf".
        allow_network: only when True may a hub id be downloaded (into the Hugging Face cache). Tests never set it.

    Raises:
        FileNotFoundError: the path does not exist and network access is not allowed.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} has no config.json: not a llava-hf model directory")
        return path
    if not allow_network:
        raise FileNotFoundError(
            f"model directory {str(model)!r} does not exist; pass a local llava-hf directory, "
            "or allow_network=True to download a hub id"
        )
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.jinja", "*.safetensors", "*.txt", "*.model"]  # never the pickled *.bin weights
    return Path(snapshot_download(str(model), allow_patterns=patterns))


def load_config(model_dir: Path):
    """The checkpoint's ``LlavaOnevisionConfig`` / ``LlavaConfig`` (read locally, never from the hub)."""
    from transformers import AutoConfig

    with open(model_dir / "config.json", encoding="utf-8") as f:
        model_type = json.load(f).get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"{model_dir}: unsupported model_type {model_type!r}; expected {sorted(SUPPORTED_MODEL_TYPES)}"
        )
    return AutoConfig.from_pretrained(model_dir, local_files_only=True)


def canonical_key(key: str) -> str:
    """Map any supported checkpoint key layout to the canonical one (see module docstring)."""
    parts = key.split(".")
    if parts[0] == "model" and len(parts) > 1 and parts[1] in _TOP_LEVEL:
        parts = parts[1:]
    if parts[0] == "vision_tower" and len(parts) > 1 and parts[1] == "vision_model":
        parts = parts[:1] + parts[2:]
    elif parts[0] == "language_model" and len(parts) > 1:
        if parts[1] == "model":
            parts = parts[:1] + parts[2:]
        elif parts[1] == "lm_head":
            parts = parts[1:]
    return ".".join(parts)


class CheckpointReader:
    """Lazy access to a (possibly sharded) safetensors checkpoint by canonical key.

    Nothing is read until ``load`` is called, and then only the requested tensors.
    """

    def __init__(self, model_dir: Path):
        self.model_dir = Path(model_dir)
        index = self.model_dir / "model.safetensors.index.json"
        single = self.model_dir / "model.safetensors"
        if index.is_file():
            with open(index, encoding="utf-8") as f:
                weight_map: dict[str, str] = json.load(f)["weight_map"]
        elif single.is_file():
            from safetensors import safe_open

            with safe_open(str(single), framework="pt") as f:
                weight_map = dict.fromkeys(f.keys(), single.name)
        else:
            raise FileNotFoundError(
                f"{self.model_dir}: no model.safetensors(.index.json); pickled checkpoints are not loaded"
            )
        # canonical key → (file name, key as stored)
        self._where: dict[str, tuple[str, str]] = {}
        for stored, fname in weight_map.items():
            canon = canonical_key(stored)
            if canon in self._where:
                raise ValueError(f"checkpoint keys {stored!r} and {self._where[canon][1]!r} collide")
            self._where[canon] = (fname, stored)

    def keys(self) -> list[str]:
        """All canonical keys."""
        return sorted(self._where)

    def __iter__(self):
        """The canonical keys, sorted."""
        return iter(self.keys())

    def get_tensor(self, key: str) -> torch.Tensor:
        """One tensor by canonical key (KeyError if absent)."""
        from safetensors import safe_open

        fname, stored = self._where[key]
        with safe_open(str(self.model_dir / fname), framework="pt") as f:
            return f.get_tensor(stored)

    def load(self, prefix: str, keep: Callable[[str], bool] = lambda _: True) -> dict[str, torch.Tensor]:
        """Tensors whose canonical key starts with ``prefix``, keyed by the rest of the key.

        Args:
            prefix: e.g. "vision_tower." or "lm_head.".
            keep: predicate on the stripped key; tensors it rejects are never read.
        """
        from safetensors import safe_open

        wanted: dict[str, list[tuple[str, str]]] = {}
        for canon, (fname, stored) in self._where.items():
            if canon.startswith(prefix) and keep(canon[len(prefix) :]):
                wanted.setdefault(fname, []).append((canon[len(prefix) :], stored))
        out: dict[str, torch.Tensor] = {}
        with ExitStack() as stack:
            for fname, items in wanted.items():
                f = stack.enter_context(safe_open(str(self.model_dir / fname), framework="pt"))
                for short, stored in items:
                    out[short] = f.get_tensor(stored)
        return out


def backbone_fingerprint(reader: CheckpointReader, spec: BackboneSpec) -> str:
    """32-hex-digit identity of what makes features compatible between the two halves.

    Covers the split-relevant spec and the bytes of every vision-tower tensor the device runs (as stored, so the load
    dtype does not change it). Both halves compute it from the checkpoint with this one function, so a server holding
    another vision tower (or another feature layer / selection) sees a different fingerprint and can refuse.
    Cost: one read of the vision tower's bytes (about 0.8 GB for SigLIP-SO400M in bf16).
    """
    import dataclasses
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    h.update(b"tofc-backbone-v1\0")
    h.update(json.dumps(dataclasses.asdict(spec), sort_keys=True).encode())
    keep = _vision_tower_keep(spec)
    for key in sorted(k for k in reader if k.startswith("vision_tower.") and keep(k[len("vision_tower.") :])):
        tensor = reader.get_tensor(key)  # one at a time: nothing of the tower stays in memory
        h.update(f"\0{key}:{tensor.dtype}:{tuple(tensor.shape)}\0".encode())
        # Byte view, not numpy: numpy has no bfloat16.
        h.update(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def build_module(
    factory: Callable[[], torch.nn.Module],
    state_dict: dict[str, torch.Tensor],
    *,
    dtype: torch.dtype,
    device: torch.device,
    allow_missing: Iterable[str] = (),
) -> torch.nn.Module:
    """Construct a module without random init, directly in ``dtype`` on ``device``, and load ``state_dict`` strictly.

    Args:
        factory: builds the (uninitialised) module; called under ``no_init_weights`` and ``torch.device(device)``.
        state_dict: every parameter/persistent buffer of the module (extra keys are an error).
        dtype: parameter dtype (the state dict is cast tensor by tensor while copying).
        device: where parameters are allocated.
        allow_missing: keys that may be absent (tied weights).

    Raises:
        ValueError: missing or unexpected keys (a wrong checkpoint must not load silently).
    """
    from transformers.initialization import no_init_weights

    previous = torch.get_default_dtype()
    try:
        torch.set_default_dtype(dtype)
        with no_init_weights(), torch.device(device):
            module = factory()
    finally:
        torch.set_default_dtype(previous)
    result = module.load_state_dict(state_dict, strict=False)
    missing = sorted(set(result.missing_keys) - set(allow_missing))
    if missing or result.unexpected_keys:
        raise ValueError(
            f"checkpoint does not match {type(module).__name__}: missing {missing[:8]}, "
            f"unexpected {sorted(result.unexpected_keys)[:8]}"
        )
    return module.eval().requires_grad_(False)


def _vision_tower_keep(spec: BackboneSpec, n_layers: int | None = None) -> Callable[[str], bool]:
    """Keep embeddings, pre-norm and the first ``n_layers`` encoder layers (default: ``vision_layers_needed``)."""
    n_layers = spec.vision_layers_needed if n_layers is None else n_layers

    def keep(key: str) -> bool:
        if key.startswith(("post_layernorm.", "head.")):
            return False  # applied after the feature layer: never computed on the device
        if key.startswith("encoder.layers."):
            return int(key.split(".")[2]) < n_layers
        return True

    return keep


def _vision_config(config, n_layers: int):
    """A copy of the vision config with ``n_layers`` encoder layers and no SigLIP pooling head."""
    vcfg = config.vision_config.__class__.from_dict(config.vision_config.to_dict())
    vcfg.num_hidden_layers = n_layers
    if hasattr(vcfg, "vision_use_head"):
        vcfg.vision_use_head = False
    vcfg._attn_implementation = config.vision_config._attn_implementation
    return vcfg


def build_vision_tower(
    reader: CheckpointReader, config, spec: BackboneSpec, dtype, device, n_layers: int | None = None
) -> torch.nn.Module:
    """The vision tower truncated after ``n_layers`` encoder layers (default: the feature layer's).

    The config copy gets fewer layers (and no SigLIP pooling head), so the unused layers are never allocated.
    """
    from transformers import AutoModel

    n_layers = spec.vision_layers_needed if n_layers is None else n_layers
    vcfg = _vision_config(config, n_layers)
    state = reader.load("vision_tower.", _vision_tower_keep(spec, n_layers))

    def factory():
        tower = AutoModel.from_config(vcfg, dtype=dtype)
        core = getattr(tower, "vision_model", tower)
        # post_layernorm is applied after the last layer: with a truncated tower it would normalise the feature
        # layer's output, which the reference does not do. Remove it so it can be neither computed nor loaded.
        if hasattr(core, "post_layernorm"):
            del core.post_layernorm
        return core

    return build_module(factory, state, dtype=dtype, device=device)


def build_vision_tail(reader: CheckpointReader, config, spec: BackboneSpec, split_layer: int, dtype, device):
    """The server's rest of the tower after ``split_layer`` (``vision_split.VisionTail``): only encoder layers
    split_layer+1..k are read and allocated (the checkpoint's layer i becomes the tail's layer i - split_layer)."""
    from transformers import AutoModel

    from .vision_split import VisionTail, check_split_layer

    check_split_layer(spec, split_layer)
    n_tail = spec.vision_layers_needed - split_layer
    vcfg = _vision_config(config, n_tail)

    def in_tail(key: str) -> bool:
        return key.startswith("encoder.layers.") and split_layer <= int(key.split(".")[2]) < spec.vision_layers_needed

    state = {
        f"{int(key.split('.')[2]) - split_layer}.{key.split('.', 3)[3]}": value
        for key, value in reader.load("vision_tower.", in_tail).items()
    }

    def factory():
        tower = AutoModel.from_config(vcfg, dtype=dtype)
        return getattr(tower, "vision_model", tower).encoder.layers

    layers = build_module(factory, state, dtype=dtype, device=device)
    return VisionTail(spec, split_layer, list(layers)).eval()


def build_projector(reader: CheckpointReader, config, dtype, device) -> torch.nn.Module:
    """The checkpoint's multi_modal_projector (vision d → LLM D)."""
    if config.model_type == "llava_onevision":
        from transformers.models.llava_onevision.modeling_llava_onevision import (
            LlavaOnevisionMultiModalProjector as Projector,
        )
    else:
        from transformers.models.llava.modeling_llava import LlavaMultiModalProjector as Projector
    state = reader.load("multi_modal_projector.")
    return build_module(lambda: Projector(config), state, dtype=dtype, device=device)


def build_language_model(reader: CheckpointReader, config, dtype, device) -> torch.nn.Module:
    """The causal LM (embeddings, decoder, norm, lm_head) as its own ``*ForCausalLM`` class.

    The LLaVA classes run exactly these modules on ``inputs_embeds``; holding them as a ``*ForCausalLM`` gives us
    ``generate(inputs_embeds=...)`` without the vision tower.
    """
    from transformers import AutoModelForCausalLM

    tcfg = config.text_config
    state = {f"model.{k}": v for k, v in reader.load("language_model.").items()}
    state.update({f"lm_head.{k}": v for k, v in reader.load("lm_head.").items()})
    tied = "lm_head.weight" not in state
    if tied:
        # Checkpoints with tied embeddings (Qwen2-0.5B) store no lm_head: the output matrix is the embedding table.
        tcfg = tcfg.__class__.from_dict(tcfg.to_dict())
        tcfg.tie_word_embeddings = True
    tcfg._attn_implementation = config.text_config._attn_implementation

    lm = build_module(
        lambda: AutoModelForCausalLM.from_config(tcfg, dtype=dtype),
        state,
        dtype=dtype,
        device=device,
        allow_missing=("lm_head.weight",) if tied else (),
    )
    if tied:
        lm.tie_weights()
        if lm.lm_head.weight.data_ptr() != lm.get_input_embeddings().weight.data_ptr():
            raise ValueError("checkpoint has no lm_head.weight and the language model could not tie it")
    return lm


def build_image_newline(reader: CheckpointReader, dtype, device) -> torch.Tensor | None:
    """OneVision's learned newline embedding [D], or None for LLaVA-1.5."""
    state = reader.load("image_newline")
    if "" not in state:
        return None
    return state[""].to(dtype=dtype, device=device)


def load_image_processor(model_dir: Path):
    """The checkpoint's image processor, PIL backend (the torchvision backend is unusable here)."""
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(model_dir, backend="pil", local_files_only=True)


def load_tokenizer(model_dir: Path):
    """The checkpoint's tokenizer, with the chat template from the processor files if the tokenizer lacks one."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    if not getattr(tokenizer, "chat_template", None):
        # Real llava-hf repos keep the template with the processor (chat_template.json / .jinja).
        jinja = model_dir / "chat_template.jinja"
        js = model_dir / "chat_template.json"
        if jinja.is_file():
            tokenizer.chat_template = jinja.read_text(encoding="utf-8")
        elif js.is_file():
            with open(js, encoding="utf-8") as f:
                tokenizer.chat_template = json.load(f)["chat_template"]
        else:
            raise ValueError(f"{model_dir}: no chat template in the tokenizer or processor files")
    return tokenizer


def load_device_half(
    model: str | os.PathLike,
    *,
    dtype: str | torch.dtype = "fp32",
    device: str | torch.device = "cpu",
    allow_network: bool = False,
    tiles_per_batch: int | None = None,
    split_layer: int | None = None,
):
    """Load the robot side: image processor + vision tower up to the feature layer. The LLM is never read.

    Args:
        model: local llava-hf directory (or hub id with ``allow_network=True``).
        dtype: "fp32", "bf16" or "fp16".
        device: "cpu" or "cuda[:N]".
        allow_network: permit downloading a hub id.
        tiles_per_batch: run the vision tower on at most this many tiles at once (None: all tiles in one batch).
        split_layer: run only this many encoder layers (a split inside the tower, AlignedVQ); None: up to the
            feature layer. Later layers are not read.

    Returns:
        ``DeviceHalf``.
    """
    from .device_half import DeviceHalf

    model_dir = resolve_model_dir(model, allow_network)
    config = load_config(model_dir)
    spec = BackboneSpec.from_config(config)
    dt, dev = parse_dtype(dtype), parse_device(device)
    reader = CheckpointReader(model_dir)
    if split_layer is not None:
        from .vision_split import check_split_layer

        check_split_layer(spec, split_layer)
    tower = build_vision_tower(reader, config, spec, dt, dev, n_layers=split_layer)
    return DeviceHalf(
        spec,
        tower,
        load_image_processor(model_dir),
        dtype=dt,
        device=dev,
        tiles_per_batch=tiles_per_batch,
        fingerprint=backbone_fingerprint(reader, spec),
        split_layer=split_layer,
    )


def load_server_half(
    model: str | os.PathLike,
    *,
    dtype: str | torch.dtype = "fp32",
    device: str | torch.device = "cpu",
    allow_network: bool = False,
    load_vision: bool = False,
    vision_splits: Iterable[int] = (),
):
    """Load the server side: projector, image_newline, language model, tokenizer (and optionally the vision tower).

    Args:
        model: local llava-hf directory (or hub id with ``allow_network=True``).
        dtype: "fp32", "bf16" or "fp16".
        device: "cpu" or "cuda[:N]".
        allow_network: permit downloading a hub id.
        load_vision: also load the vision tower, for image modes (JPEG/WebP baselines) where the server sees pixels.
        vision_splits: split layers inside the tower whose payloads this server finishes (AlignedVQ): for each, the
            encoder layers after it (``ServerHalf.vision_tails``; the feature layer itself needs none).

    Returns:
        ``ServerHalf``.
    """
    from transformers import GenerationConfig

    from .device_half import DeviceHalf
    from .server_half import ServerHalf

    model_dir = resolve_model_dir(model, allow_network)
    config = load_config(model_dir)
    spec = BackboneSpec.from_config(config)
    dt, dev = parse_dtype(dtype), parse_device(device)
    reader = CheckpointReader(model_dir)
    projector = build_projector(reader, config, dt, dev)
    newline = build_image_newline(reader, dt, dev)
    if spec.family == "onevision" and newline is None:
        raise ValueError(f"{model_dir}: OneVision checkpoint without image_newline")
    lm = build_language_model(reader, config, dt, dev)
    if (model_dir / "generation_config.json").is_file():
        lm.generation_config = GenerationConfig.from_pretrained(model_dir, local_files_only=True)
    fingerprint = backbone_fingerprint(reader, spec)
    splits = sorted(set(vision_splits) - {spec.vision_layers_needed})  # at the feature layer there is no tail
    tails = {x: build_vision_tail(reader, config, spec, x, dt, dev) for x in splits}
    vision = None
    if load_vision:
        tower = build_vision_tower(reader, config, spec, dt, dev)
        vision = DeviceHalf(spec, tower, load_image_processor(model_dir), dtype=dt, device=dev, fingerprint=fingerprint)
    return ServerHalf(
        spec,
        projector,
        newline,
        lm,
        load_tokenizer(model_dir),
        dtype=dt,
        device=dev,
        vision=vision,
        fingerprint=fingerprint,
        vision_tails=tails,
    )
