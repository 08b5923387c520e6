"""Stable Diffusion as an engine plugin: its model folders and the ``demo`` and ``tiny-checkpoint`` commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from atelier.engine.folders import Folders
from atelier.engine.runtime import Command, Engine, EngineConfig, Plugin
from atelier.engine.warmup import WarmupStep

from .folders import configured_model_folders

TINY_NAME = "atelier-tiny-sd15.safetensors"
WORKFLOWS_DIR = Path(__file__).resolve().parents[2] / "workflows"


def _tiny_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", choices=["sd15", "sd2", "sdxl", "sdxl_refiner"], default="sd15")
    p.add_argument("--inpaint", action="store_true", help="an inpainting model (9-channel UNet)")
    p.add_argument("--out", type=Path, required=True, help="the .safetensors file to write")
    p.add_argument("--seed", type=int, default=0)


def cmd_tiny(args: argparse.Namespace) -> int:
    from .tiny import write_tiny_checkpoint

    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_tiny_checkpoint(args.arch, args.out, seed=args.seed, inpaint=args.inpaint)
    print(
        f"wrote a tiny random-weight {args.arch}{' inpainting' if args.inpaint else ''} checkpoint to {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)"
    )
    return 0


def _demo_args(p: argparse.ArgumentParser) -> None:
    from atelier.engine.cli import add_run_arguments

    p.add_argument("--workflow", default=str(WORKFLOWS_DIR / "portrait.json"))
    add_run_arguments(p)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the portrait workflow; with no checkpoint at all, write the tiny one first and say so."""
    from atelier.engine import cli

    engine = cli.engine_for(args)
    if engine is None:
        return 2
    files = engine.folders
    chosen = any(s.split("=", 1)[0] == "checkpoint" for s in args.set)
    if not chosen:
        names = files.list_models("checkpoints")
        if not names:
            folder = files.models["checkpoints"][0]
            from .tiny import write_tiny_checkpoint

            folder.mkdir(parents=True, exist_ok=True)
            write_tiny_checkpoint("sd15", folder / TINY_NAME, seed=0)
            names = [TINY_NAME]
        real = [n for n in names if n != TINY_NAME]
        name = real[0] if real else names[0]
        if name == TINY_NAME:
            where = ", ".join(str(p) for p in files.models["checkpoints"])
            print(
                f"No real checkpoint in {where}, so this demo uses\n"
                f"{TINY_NAME}: a tiny model with RANDOM weights that Atelier generated. It runs the\n"
                "real pipeline end to end, but random weights draw noise, not portraits. For real pictures put\n"
                "a checkpoint (SD1.x, SD2.x or SDXL .safetensors) in that folder, or point at one you have:\n"
                "  ./dev demo --models-dir /path/to/ComfyUI/models --set checkpoint=NAME.safetensors\n",
                file=sys.stderr,
            )
            if not any(s.startswith(("width=", "height=")) for s in args.set):
                args.set = [*args.set, "width=256", "height=320"]
        args.set = [f"checkpoint={name}", *args.set]
    args.workflows = [args.workflow]
    return cli.cmd_run(args, engine)


class StableDiffusionPlugin(Plugin):
    name = "sd"

    def configure_folders(self, config: EngineConfig, folders: Folders) -> None:
        assert config.models_dir is not None
        folders.models.update(configured_model_folders(config.models_dir, config.config_file))
        folders.pipelines.append(WORKFLOWS_DIR)  # the shipped portrait workflows, after the user's library

    def warmup(self, engine: Engine, long_lived: bool = True) -> Sequence[WarmupStep]:
        from .warmup import warmup_steps

        return warmup_steps(engine, long_lived)

    def commands(self) -> Sequence[Command]:
        return (
            Command(
                "tiny-checkpoint",
                "write a tiny random-weight checkpoint in the real single-file layout",
                _tiny_args,
                cmd_tiny,
                engine_options=False,
            ),
            Command(
                "demo", "run the portrait workflow headless on the embedded defaults", _demo_args, cmd_demo
            ),
        )


plugin = StableDiffusionPlugin()
