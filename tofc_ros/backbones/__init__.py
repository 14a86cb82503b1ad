"""The device and server halves of Hugging Face LLaVA models (no rclpy).

Split point (TOFC): after the vision encoder, before the multimodal projector.

    robot:  load_device_half(path).encode_image(rgb) -> VisionFeatures(features [T, n_v, d], grid, image_size)
    server: load_server_half(path).answer(features [T, n_c, d], grid, image_size, question, GenerationOptions())

Token order for merged tiles: ``token_order.arrange_image_tokens`` (documented there). Tiny test models: ``tiny``.
"""

from .device_half import DeviceHalf, VisionFeatures, validate_rgb
from .loading import load_device_half, load_server_half, parse_dtype, resolve_model_dir
from .server_half import GenerationOptions, GenerationResult, PreparedInputs, ServerHalf
from .spec import BackboneSpec
from .token_order import arrange_image_tokens, num_image_tokens

__all__ = [
    "BackboneSpec",
    "DeviceHalf",
    "GenerationOptions",
    "GenerationResult",
    "PreparedInputs",
    "ServerHalf",
    "VisionFeatures",
    "arrange_image_tokens",
    "load_device_half",
    "load_server_half",
    "num_image_tokens",
    "parse_dtype",
    "resolve_model_dir",
    "validate_rgb",
]
