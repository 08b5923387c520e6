"""Model-related command-line pieces: model folder flags, ``atelier tiny-checkpoint`` and ``atelier demo``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from atelier.engine import cli
from atelier.engine import folders as F

from .manager import ModelManager, configure_models, list_models

TINY_NAME = "atelier-tiny-sd15.safetensors"


def _setup(args: argparse.Namespace) -> None:
    try:
        configure_models(getattr(args, "models_dir", None), getattr(args, "config", None))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


def _tiny_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", choices=["sd15", "sdxl"], default="sd15")
    p.add_argument("--out", type=Path, required=True, help="the .safetensors file to write")
    p.add_argument("--seed", type=int, default=0)


def cmd_tiny(args: argparse.Namespace) -> int:
    from .tiny import write_tiny_checkpoint

    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_tiny_checkpoint(args.arch, args.out, seed=args.seed)
    print(
        f"wrote a tiny random-weight {args.arch} checkpoint to {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)"
    )
    return 0


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workflow", default=str(Path(__file__).resolve().parents[2] / "workflows" / "portrait.json")
    )
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--sweep", action="append", default=[], metavar="NAME=V1,V2")
    p.add_argument("--events", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None, help="float16, bfloat16 or float32")
    p.add_argument("--quiet", "-q", action="store_true")
    cli.add_folder_args(p)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the portrait workflow; with no checkpoint at all, write the tiny one first and say so."""
    _setup(args)
    chosen = any(s.split("=", 1)[0] == "checkpoint" for s in args.set)
    if not chosen:
        names = list_models("checkpoints")
        if not names:
            folder = F.active().models["checkpoints"][0]
            from .tiny import write_tiny_checkpoint

            folder.mkdir(parents=True, exist_ok=True)
            write_tiny_checkpoint("sd15", folder / TINY_NAME, seed=0)
            names = [TINY_NAME]
        real = [n for n in names if n != TINY_NAME]
        name = real[0] if real else names[0]
        if name == TINY_NAME:
            where = ", ".join(str(p) for p in F.active().models["checkpoints"])
            print(
                f"No real checkpoint in {where}, so this demo uses\n"
                f"{TINY_NAME}: a tiny model with RANDOM weights that Atelier generated. It runs the\n"
                "real pipeline end to end, but random weights draw noise, not portraits. For real pictures put\n"
                "a checkpoint (SD1.x, SD2.x or SDXL .safetensors) in that folder, or point at one you have:\n"
                "  ./dev demo --models-dir /path/to/ComfyUI/models --set checkpoint=NAME.safetensors\n",
                file=sys.stderr,
            )
            args.set = (
                [*args.set, "width=256", "height=320"]
                if not any(s.startswith(("width=", "height=")) for s in args.set)
                else args.set
            )
        args.set = [f"checkpoint={name}", *args.set]
    args.workflows = [args.workflow]
    return cli.cmd_run(args)


DTYPES = {
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float32": torch.float32,
    "fp32": torch.float32,
}


def _services(args: argparse.Namespace) -> dict[str, object]:
    device = getattr(args, "device", None) or cli.default_device()
    name = getattr(args, "dtype", None) or os.environ.get("ATELIER_DTYPE")
    if name and name not in DTYPES:
        print(f"error: unknown dtype {name!r}; use one of {', '.join(DTYPES)}", file=sys.stderr)
        raise SystemExit(2)
    return {"models": ModelManager(device=device, dtype=DTYPES[name] if name else None)}


cli.SETUP_HOOKS.append(_setup)
cli.SERVICES_FACTORY = _services
cli.SUBCOMMANDS["tiny-checkpoint"] = (_tiny_args, cmd_tiny)
cli.SUBCOMMANDS["demo"] = (_demo_args, cmd_demo)
