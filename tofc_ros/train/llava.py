"""A whole LLaVA model held for training, seen through the same DeviceHalf / ServerHalf code that serving runs.

    pixel_values [T,3,S,S] ─ vision_features (grad) ─► [T, n_v, d] ─► (merge / codec)
        ─► ServerHalf.image_embeddings ─► packed LM pass (backbones.answer_scoring)

The modules are those of one ``LlavaOnevisionForConditionalGeneration`` (or ``LlavaForConditionalGeneration``), so
``save`` writes a normal llava-hf directory that ``backbones.load_device_half`` / ``load_server_half`` and
``from_pretrained`` read. ``server`` is a ServerHalf whose projector, newline and language model *are* the trained
modules (shared, not copied): prompt building, projection and token order cannot drift between training and serving.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from tofc_ros.backbones.device_half import DeviceHalf
from tofc_ros.backbones.server_half import ServerHalf
from tofc_ros.backbones.spec import BackboneSpec
from tofc_ros.backbones.vision_split import VisionTail, run_prefix

__all__ = ["TrainableLlava"]


class TrainableLlava:
    """The full model plus serving views of it.

    Args:
        model: a ``LlavaOnevisionForConditionalGeneration`` or ``LlavaForConditionalGeneration``.
        tokenizer: its tokenizer (with a chat template).
        image_processor: its PIL image processor.
    """

    def __init__(self, model, tokenizer, image_processor):
        from transformers import AutoModelForCausalLM
        from transformers.initialization import no_init_weights

        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.spec = BackboneSpec.from_config(model.config)
        inner = model.model
        tower = inner.vision_tower
        self.vision_core = getattr(tower, "vision_model", tower)
        # A *ForCausalLM view over the checkpoint's language model and lm_head: ServerHalf generates with it.
        with no_init_weights(), torch.device("meta"):
            lm = AutoModelForCausalLM.from_config(model.config.text_config)
        lm.model = inner.language_model
        lm.lm_head = model.lm_head
        lm.generation_config = model.generation_config
        self.device_ = next(model.parameters()).device
        self.server = ServerHalf(
            self.spec,
            inner.multi_modal_projector,
            getattr(inner, "image_newline", None),
            lm,
            tokenizer,
            dtype=next(model.parameters()).dtype,
            device=self.device_,
        )
        self.device_half = DeviceHalf(
            self.spec, self.vision_core, image_processor, dtype=next(model.parameters()).dtype, device=self.device_
        )

    def parameters(self):
        """All parameters of the underlying model."""
        return self.model.parameters()

    def named_parameters(self):
        """(name, parameter) of the underlying model."""
        return self.model.named_parameters()

    # ----------------------------------------------------------------------------------------------- build / save
    @classmethod
    def from_config(cls, config, tokenizer, image_processor, seed: int = 0) -> TrainableLlava:
        """A freshly initialised model of ``config`` (seeded; the global RNG is left as it was)."""
        from transformers import LlavaForConditionalGeneration, LlavaOnevisionForConditionalGeneration

        klass = (
            LlavaOnevisionForConditionalGeneration
            if config.model_type == "llava_onevision"
            else LlavaForConditionalGeneration
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = klass(config)
        model.generation_config.eos_token_id = config.text_config.eos_token_id
        model.generation_config.pad_token_id = config.text_config.pad_token_id
        model.generation_config.do_sample = False
        return cls(model, tokenizer, image_processor)

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, dtype: torch.dtype = torch.float32, device: str = "cpu"
    ) -> TrainableLlava:
        """Load a local llava-hf directory (safetensors only; never a pickle)."""
        from transformers import AutoModelForImageTextToText

        from tofc_ros.backbones.loading import load_config, load_image_processor, load_tokenizer, resolve_model_dir

        model_dir = resolve_model_dir(path)
        load_config(model_dir)  # an unsupported model type is refused by name before anything is built
        model, info = AutoModelForImageTextToText.from_pretrained(
            model_dir, dtype=dtype, use_safetensors=True, local_files_only=True, output_loading_info=True
        )
        # from_pretrained initialises missing tensors at random and only logs it: a wrong checkpoint must not train.
        problems = {k: sorted(v)[:5] for k, v in info.items() if k in ("missing_keys", "mismatched_keys") and v}
        if problems:
            raise ValueError(f"{model_dir}: checkpoint does not match its config: {problems}")
        return cls(model.to(device), load_tokenizer(model_dir), load_image_processor(model_dir))

    def add_lora(self, patterns: list[str], r: int, alpha: float, dropout: float = 0.0, seed: int = 0) -> None:
        """Freeze every weight, then inject LoRA (peft, in place) into the linear layers whose names match one of
        the regular expressions ``patterns``; only those adapters are trainable. In place, so the serving views
        (``server``, ``device_half``, vision tails) keep pointing at the adapted modules."""
        model = self.model
        for p in model.parameters():
            p.requires_grad_(False)
        if not patterns:
            return
        from peft import LoraConfig, inject_adapter_in_model

        lcfg = LoraConfig(
            r=r,
            lora_alpha=alpha,
            lora_dropout=dropout,
            target_modules="|".join(f"(?:{p})" for p in patterns),
            bias="none",
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            inject_adapter_in_model(lcfg, model)
        for name, p in model.named_parameters():
            p.requires_grad_("lora_" in name)

    def merge_lora(self) -> None:
        """Fold every LoRA adapter into its base layer and remove the adapters (before ``save``)."""
        from peft.tuners.lora import LoraLayer

        model = self.model
        with torch.no_grad():
            for name, module in list(model.named_modules()):
                if isinstance(module, LoraLayer):
                    module.merge()
                    parent_name, _, child = name.rpartition(".")
                    parent = model.get_submodule(parent_name) if parent_name else model
                    setattr(parent, child, module.get_base_layer())
        for p in model.parameters():
            p.requires_grad_(False)

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write a llava-hf directory: config, model.safetensors, generation config, tokenizer, preprocessor."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out, safe_serialization=True)
        self.tokenizer.save_pretrained(out)
        self.image_processor.save_pretrained(out)
        return out

    # ----------------------------------------------------------------------------------------------- forward parts
    def vision_features(self, pixel_values: torch.Tensor, split_layer: int | None = None) -> torch.Tensor:
        """Vision tower up to the feature layer (or ``split_layer`` layers), with gradients: [T, 3, S, S] → [T, n, d].

        The same computation as ``DeviceHalf.encode_pixels`` (``vision_split.run_prefix``), which the robot runs
        under no_grad.
        """
        layers = self.spec.vision_layers_needed if split_layer is None else split_layer
        return run_prefix(self.spec, self.vision_core, pixel_values, layers)

    def vision_tail(self, split_layer: int) -> VisionTail:
        """The server's rest of the tower after ``split_layer``, over this model's own layers (shared, not copied)."""
        return VisionTail(
            self.spec, split_layer, list(self.vision_core.encoder.layers[split_layer : self.spec.vision_layers_needed])
        )
