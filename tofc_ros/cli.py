"""tofc: one command-line tool for data, training, evaluation, benchmarks and replay (no rclpy).

    tofc make-data llava --bag BAG [--questions Q] --out DIR   a robot's recordings as LLaVA instruction JSON
    tofc make-data llava|tsv --from easyvqa|scenes --out ...   our data sets as LLaVA JSON / VLMEvalKit TSV
    tofc check-model DIR                                        what a llava-hf checkpoint is, before using it
    tofc pretrain --config C --out DIR                          the tiny models' pre-training
    tofc train --config C [--processes N] [--resume] [--only NAME] [--set k=v]   Algorithm 1 (one run or a sweep)
    tofc eval --model M --tofc RUN [--data-file F.tsv|F.json] [--jpeg Q,..]      rate-accuracy, per category
    tofc train-two-stage --config C [--set k=v]                 two-stage answering's model (first pass + crops)
    tofc two-stage --model M --codec C --out DIR                two-stage answering: accuracy, bytes, threshold sweep
    tofc latency ...                                            the latency model
    tofc points --model M --codec C --point name=..,codec=.. --out F   an adaptive device's operating points
    tofc adaptive [--trace T] [--budget-ms B]                   adaptive points closed loop under a rate trace
    tofc replay BAG [name:=value ...]                           the device → server graph replaying a rosbag
    tofc reanswer --bag B --out DIR                             re-answer recorded features offline
    tofc launch PACKAGE FILE [name:=value ...]                  the launch-file runner
    tofc bench NAME [args]                                      bench/NAME.py (source checkout)
    tofc tiny-model --kind onevision --out DIR                  a tiny llava-hf checkpoint

Every subcommand has ``--help``. A bad path, config or checkpoint ends with one line saying what and where, and exit
status 2 (``tofc --traceback CMD ...`` shows the whole traceback instead).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["COMMANDS", "main"]

EXIT_USAGE = 2

# name -> (module, function, one-line help). The functions take argv and parse it with their own --help.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "make-data": ("tofc_ros.cli", "make_data", "recordings or our data sets as LLaVA JSON, or a VLMEvalKit TSV"),
    "check-model": ("tofc_ros.cli", "check_model", "read a llava-hf checkpoint's config, keys and tokenizer"),
    "pretrain": ("tofc_ros.train.pretrain", "main", "pre-train a tiny LLaVA-OneVision from scratch"),
    "train": ("tofc_ros.cli", "train", "Algorithm 1 (TOFC): LoRA + codec, one run or a sweep, several processes"),
    "train-avq": (
        "tofc_ros.train.aligned_vq",
        "main",
        "AlignedVQ: codebooks (+LoRA after the split) with the task loss",
    ),
    "train-two-stage": (
        "tofc_ros.train.two_stage",
        "main",
        "two-stage answering: the LLM (LoRA) learns the first pass's tokens plus the robot's crops",
    ),
    "eval": ("tofc_ros.eval.rate_accuracy", "main", "rate-accuracy through the deployed encoder/decoder/answerer"),
    "two-stage": ("tofc_ros.eval.two_stage", "main", "two-stage answering: all tiles, first pass, threshold sweep"),
    "latency": ("tofc_ros.eval.latency", "main", "device, transfer and server latency per operating point"),
    "points": ("tofc_ros.eval.points_bundle", "main", "write an operating-point bundle for an adaptive device"),
    "adaptive": ("tofc_ros.eval.adaptive", "main", "adaptive operating points under a rate trace, closed loop"),
    "replay": ("tofc_ros.cli", "replay", "replay a rosbag through the live device → server graph"),
    "reanswer": ("tofc_ros.cli", "reanswer", "re-answer a bag of recorded features offline"),
    "launch": ("tofc_ros.launcher.cli", "main", "run a ROS 2 launch file (where ros2 launch is absent)"),
    "bench": ("tofc_ros.cli", "bench", "run a benchmark script of bench/"),
    "tiny-model": ("tofc_ros.backbones.tiny", "main", "write a tiny llava-hf checkpoint for tests and demos"),
}


def _overview() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: tofc [--traceback] COMMAND [ARGS...]   (tofc COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that describe a bad input (path, config, data, checkpoint), reported in one line."""
    errors: list[type[BaseException]] = [OSError, ValueError, TypeError]
    try:
        import yaml

        errors.append(yaml.YAMLError)
    except ImportError:
        pass
    from tofc_ros.launcher.errors import LaunchError

    errors.append(LaunchError)
    return tuple(errors)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename and exc.strerror:  # "[Errno 2] ..." → "No such file ...: 'x'"
        return f"{exc.strerror}: {str(exc.filename)!r}"
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return text or type(exc).__name__


# --------------------------------------------------------------------------------------------------- commands
def train(argv: list[str]) -> int:
    """``tofc train``: Algorithm 1; ``--processes N`` runs N data-parallel processes on this machine (torchrun)."""
    argv = list(argv)
    processes = 1
    if "--processes" in argv:
        at = argv.index("--processes")
        try:
            processes = int(argv[at + 1])
        except (IndexError, ValueError):
            raise ValueError("--processes needs a positive number") from None
        del argv[at : at + 2]
        if processes < 1:
            raise ValueError("--processes needs a positive number")
    if processes == 1 or "-h" in argv or "--help" in argv:
        from tofc_ros.train.tofc import main as tofc_main

        if "-h" in argv or "--help" in argv:
            print("tofc train --processes N: N data-parallel processes on this machine (torchrun; gloo on CPU)\n")
        return tofc_main(argv)
    _check_train_args(argv)  # a bad config or model fails here, in one line, not once per process
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    # Each process runs this tool again (one-line errors there too); torchrun adds its own summary of a failure.
    return subprocess.call([*cmd, "-m", "tofc_ros", "train", *argv], env=env)


def _check_train_args(argv: list[str]) -> None:
    """The config parses and every run's model is a supported llava-hf directory (before starting processes)."""
    import argparse

    from tofc_ros.backbones.loading import load_config as load_model_config
    from tofc_ros.backbones.loading import resolve_model_dir
    from tofc_ros.train.common import load_config
    from tofc_ros.train.tofc import TofcTrainConfig, expand_sweep

    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--config")
    ap.add_argument("--set", action="append", default=[])
    known, _ = ap.parse_known_args(argv)
    for run in expand_sweep(load_config(TofcTrainConfig, known.config, known.set)):
        load_model_config(resolve_model_dir(run.model))


def _decode_recorded_frame(frame):
    """A recorded sensor_msgs/Image or CompressedImage → RGB, as the device node converts it live."""
    from tofc_ros.eval.replay.typestore import IMAGE, typestore
    from tofc_ros.nodes.images import compressed_msg_to_rgb, image_msg_to_rgb

    msg = typestore().deserialize_cdr(frame.data, frame.msgtype)
    limit = 100_000_000
    return image_msg_to_rgb(msg, limit) if frame.msgtype == IMAGE else compressed_msg_to_rgb(msg, limit)


def make_data(argv: list[str]) -> int:
    """``tofc make-data``: ``--bag`` converts recordings (``eval.replay.to_llava``), else ``data.convert``."""
    if "--bag" not in argv:
        from tofc_ros.data.convert import main as convert_main

        return convert_main(argv)
    import argparse

    ap = argparse.ArgumentParser(
        prog="tofc make-data llava --bag",
        description="A rosbag's camera frames + a questions file with answers (the replay format) as LLaVA JSON: one "
        "record per asked-about frame, its questions as a multi-turn conversation.",
    )
    ap.add_argument("format", choices=("llava",))
    ap.add_argument("--bag", required=True, help="rosbag2 directory or .mcap/.db3 file")
    ap.add_argument("--questions", default=None, help="questions file with answers (default: the bag's sidecar)")
    ap.add_argument("--camera-topic", default=None, help="camera topic (default: the bag's only one)")
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--name", default="data", help="data file stem")
    ap.add_argument("--max-turns", type=int, default=None, help="turns per record (default: all of a frame's)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    from tofc_ros.eval.replay.to_llava import bag_to_llava

    done = bag_to_llava(
        args.bag,
        args.out,
        _decode_recorded_frame,
        questions=args.questions,
        camera_topic=args.camera_topic,
        name=args.name,
        max_turns=args.max_turns,
        progress=not args.no_progress,
    )
    print(
        f"{done.path}: {done.questions} questions in {done.records} records "
        f"({done.without_answer} without an answer, {done.without_frame} before any frame: skipped)"
    )
    return 0


def replay(argv: list[str]) -> int:
    """``tofc replay BAG [name:=value ...]``: replay.launch.xml with ``bag:=BAG`` through the launcher."""
    import argparse

    ap = argparse.ArgumentParser(
        prog="tofc replay",
        description="Replay a rosbag's camera frames and questions through the device → server graph "
        "(launch/replay.launch.xml); launch arguments as name:=value (output_dir, mode, rate, uplink_mbps, ...).",
    )
    ap.add_argument("bag", help="rosbag2 directory or .mcap/.db3 file")
    ap.add_argument("launch_args", nargs="*", metavar="name:=value")
    args = ap.parse_args(argv)
    if not Path(args.bag).exists():
        raise FileNotFoundError(f"bag {args.bag!r} not found")
    bad = [a for a in args.launch_args if ":=" not in a]
    if bad:
        raise ValueError(f"launch arguments must be name:=value, got {bad}")
    from tofc_ros.launcher.cli import main as launch_main

    return launch_main(["tofc_ros", "replay.launch.xml", f"bag:={Path(args.bag).resolve()}", *args.launch_args])


def reanswer(argv: list[str]) -> int:
    """``tofc reanswer``: ``tofc_ros.eval.offline`` (its report goes to --out)."""
    from tofc_ros.eval.offline import main as offline_main

    offline_main(argv)
    return 0


def _bench_dir() -> Path:
    for root in (Path.cwd(), Path(__file__).resolve().parents[1]):
        if (root / "bench").is_dir():
            return root / "bench"
    raise FileNotFoundError("no bench/ folder here or beside the package: run tofc bench from the source checkout")


def bench(argv: list[str]) -> int:
    """``tofc bench NAME [args]``: ``bench/NAME.py`` with the given arguments; ``tofc bench --list`` names them."""
    if not argv or argv[0] in ("-h", "--help", "--list"):
        names = sorted(p.stem for p in _bench_dir().glob("*.py"))
        print("usage: tofc bench NAME [ARGS...]   (tofc bench NAME --help for its options)\n\nbenchmarks:")
        print("\n".join(f"  {n}" for n in names))
        return 0
    script = _bench_dir() / f"{argv[0].removesuffix('.py')}.py"
    if not script.is_file():
        raise FileNotFoundError(f"no benchmark {argv[0]!r} in {script.parent} (tofc bench --list)")
    return subprocess.call([sys.executable, str(script), *argv[1:]])


def check_model(argv: list[str]) -> int:
    """``tofc check-model DIR``: the checkpoint's type, split facts, key layout and tokenizer, without loading it."""
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="tofc check-model", description=check_model.__doc__.split(": ", 1)[1])
    ap.add_argument("model", help="llava-hf checkpoint directory")
    args = ap.parse_args(argv)
    import dataclasses

    from tofc_ros.backbones.loading import CheckpointReader, load_config, load_tokenizer, resolve_model_dir
    from tofc_ros.backbones.spec import BackboneSpec

    model_dir = resolve_model_dir(args.model)
    config = load_config(model_dir)
    spec = BackboneSpec.from_config(config)
    reader = CheckpointReader(model_dir)
    keys = reader.keys()
    tops = sorted({k.split(".")[0] for k in keys})
    for needed in ("vision_tower", "multi_modal_projector", "language_model"):
        if needed not in tops:
            raise ValueError(f"{model_dir}: checkpoint has no {needed} tensors (found {tops})")
    tokenizer = load_tokenizer(model_dir)
    info = {k: v for k, v in dataclasses.asdict(spec).items() if k != "grid_pinpoints"}
    info.update(
        path=str(model_dir),
        tensors=len(keys),
        tied_lm_head="lm_head.weight" not in keys,
        tokenizer_vocab=len(tokenizer),
        image_token=tokenizer.convert_ids_to_tokens(spec.image_token_id),
    )
    print(json.dumps(info, indent=2))
    return 0


# --------------------------------------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> int:
    """``tofc COMMAND [ARGS...]``: dispatch to the command's own main; bad input ends in one line and exit 2."""
    try:
        return _dispatch(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:  # `tofc ... | head`: the reader left; not an error of ours
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - interpreter shutdown flushes stdout once more
        return 0


def _dispatch(argv: list[str]) -> int:
    show_traceback = False
    while argv and argv[0] == "--traceback":
        show_traceback = True
        argv = argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(_overview())
        return 0 if argv else EXIT_USAGE
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"tofc: error: unknown command {name!r}; one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return EXIT_USAGE
    module, func, _ = COMMANDS[name]
    try:
        result = getattr(importlib.import_module(module), func)(rest)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2, already printed)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # an OSError, but the reader's doing: main handles it
        raise
    except _user_errors() as exc:
        if show_traceback:
            raise
        print(f"tofc {name}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    return int(result or 0) if not isinstance(result, dict) else 0


if __name__ == "__main__":
    sys.exit(main())
