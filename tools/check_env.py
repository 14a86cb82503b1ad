"""Fail fast when the venv holds what breaks this project (platform.md): an unpinned torch or torchvision."""

import importlib.metadata as md
import sys

REQUIRED_TORCH = "2.13.0"


def main() -> int:
    problems = []
    try:
        torch_version = md.version("torch")
    except md.PackageNotFoundError:
        torch_version = None
    if torch_version is None or not torch_version.startswith(REQUIRED_TORCH):
        problems.append(f"torch {torch_version} installed, need {REQUIRED_TORCH} (the CPU wheel)")
    for forbidden in ("torchvision", "torchaudio"):
        try:
            problems.append(
                f"{forbidden} {md.version(forbidden)} is installed: it breaks compressai and "
                f"transformers' LLaVA imports here; pip uninstall {forbidden}"
            )
        except md.PackageNotFoundError:
            pass
    nvidia = sorted(d.metadata["Name"] for d in md.distributions() if d.metadata["Name"].startswith("nvidia-"))
    if nvidia:
        problems.append(f"CUDA packages present ({', '.join(nvidia[:3])}...): something let pip choose torch")
    for p in problems:
        print(f"check_env: {p}", file=sys.stderr)
    if not problems:
        print(f"check_env: torch {torch_version}, no torchvision")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
