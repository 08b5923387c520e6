"""The server as an engine plugin: ``atelier serve``."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from atelier.engine.runtime import Command, Plugin

from .settings import PREVIEW_METHODS


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    p.add_argument("--port", type=int, default=8188)
    p.add_argument(
        "--token",
        default=os.environ.get("ATELIER_TOKEN"),
        help="required on every request when binding beyond loopback ($ATELIER_TOKEN)",
    )
    p.add_argument("--database", type=Path, default=None, help="SQLite file (default ./atelier.db)")
    p.add_argument("--allow-origin", action="append", default=[], help="extra origins allowed (CORS)")
    p.add_argument("--max-upload-mb", type=float, default=32.0)
    p.add_argument(
        "--preview-method",
        choices=PREVIEW_METHODS,
        default="none",
        help="latent previews while sampling (default none, as ComfyUI; auto = latent2rgb)",
    )
    p.add_argument(
        "--max-queued", type=int, default=1000, help="most jobs queued or running; more are refused (503)"
    )
    p.add_argument(
        "--batch-jobs",
        type=int,
        default=8,
        help="most queued jobs sampled as one batch (same model, size, sampler, steps); 1 turns batching off",
    )
    p.add_argument(
        "--batch-window-ms",
        type=float,
        default=5.0,
        help="how long a job taken alone waits for a batch partner to be queued (milliseconds)",
    )
    p.add_argument("--log-level", default="warning")
    p.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="do not import the model libraries and hash the checkpoints in the background at start-up",
    )
    p.add_argument(
        "--frontend",
        choices=("atelier", "comfyui"),
        default="atelier",
        help="the web UI at / : Atelier's canvas (default) or ComfyUI's frontend (pip install 'atelier[comfyui]')",
    )
    p.add_argument("--user-dir", type=Path, default=None, help="users' settings and files (default ./user)")
    p.add_argument(
        "--multi-user", action="store_true", help="one settings folder per user (ComfyUI's Comfy-User header)"
    )
    _ray_args(p)
    p.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run jobs on Ray worker actors: a local Ray, or the cluster at ADDRESS (pip install 'atelier[ray]')",
    )


def _ray_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ray-workers", type=int, default=None, help="Ray workers to start (default: one per GPU, else 2)"
    )
    p.add_argument(
        "--ray-gpus-per-worker",
        type=float,
        default=None,
        help="GPUs each worker takes (default 1 where the cluster has GPUs)",
    )
    p.add_argument("--ray-cpus-per-worker", type=float, default=1.0)


def _ray_settings(args: argparse.Namespace, address: str | None) -> object:
    from atelier.engine.distributed.pool import RaySettings

    gpus = args.ray_gpus_per_worker
    if gpus is None:
        gpus = 1.0 if _has_cuda() else 0.0
    return RaySettings(
        address=address,
        workers=args.ray_workers,
        gpus_per_worker=gpus,
        cpus_per_worker=args.ray_cpus_per_worker,
    )


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def cmd_serve(args: argparse.Namespace) -> int:
    from .migrations import SchemaError, refuse_newer

    if not _is_loopback(args.host) and not args.token:
        print(
            f"error: binding to {args.host} exposes Atelier beyond this machine: give --token (or ATELIER_TOKEN)",
            file=sys.stderr,
        )
        return 2
    if args.token is not None:
        from .security import token_problem

        problem = token_problem(args.token)
        if problem is not None:
            print(f"error: --token (or ATELIER_TOKEN): {problem}", file=sys.stderr)
            return 2
    if args.batch_jobs < 1 or args.batch_window_ms < 0:
        print("error: --batch-jobs must be at least 1 and --batch-window-ms at least 0", file=sys.stderr)
        return 2
    if args.max_queued < 1:
        print("error: --max-queued must be at least 1", file=sys.stderr)
        return 2
    comfy_frontend = None
    if args.frontend == "comfyui":
        from .comfy.frontend import FrontendMissing, comfyui_frontend_dir

        try:
            comfy_frontend = comfyui_frontend_dir()
        except FrontendMissing as exc:
            print(f"error: --frontend comfyui: {exc}", file=sys.stderr)
            return 2
    database = args.database or Path("atelier.db")
    try:
        refuse_newer(database)  # before anything heavy loads
    except SchemaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from atelier.engine.cli import engine_for

    from .app import Settings, create_app

    engine = engine_for(args)
    if engine is None:
        return 2
    settings = Settings(
        host=args.host,
        port=args.port,
        token=args.token,
        database=database,
        allow_origins=list(args.allow_origin),
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        preview_method=args.preview_method,
        max_image_pixels=engine.config.limits.max_image_pixels,
        limits=engine.config.limits,
        max_queued=args.max_queued,
        batch_jobs=args.batch_jobs,
        batch_window_ms=args.batch_window_ms,
        comfy_frontend=comfy_frontend,
        user_dir=args.user_dir,
        multi_user=args.multi_user,
        warmup=args.warmup,
        ray=None if args.ray is None else _ray_settings(args, None if args.ray == "local" else args.ray),
    )
    logging.basicConfig(level=args.log_level.upper())
    try:
        app = create_app(engine, settings)
    except SchemaError as exc:  # a database from a newer Atelier: say so, touch nothing
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"Atelier serving on http://{args.host}:{args.port}  (outputs in {engine.folders.output}, API docs at /docs)",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _worker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("address", help="the Ray cluster to join (as `ray start` printed it, or 'auto')")
    _ray_args(p)


def cmd_worker(args: argparse.Namespace) -> int:
    """Start worker actors on this machine's Ray node for the server of the cluster at ADDRESS; they build
    their engines from this machine's options (model folders), and stay until Ctrl+C."""
    from atelier.engine.cli import engine_for
    from atelier.engine.distributed.pool import serve_workers

    engine = engine_for(args)
    if engine is None:
        return 2
    settings = _ray_settings(args, args.address)
    return serve_workers(engine.config.model_dump(mode="json"), settings, args.ray_workers or 1)


class ServerPlugin(Plugin):
    name = "server"

    def commands(self) -> Sequence[Command]:
        return (
            Command("serve", "serve the HTTP API, the websocket and the canvas", _args, cmd_serve),
            Command(
                "worker", "join a Ray cluster as workers for `atelier serve --ray`", _worker_args, cmd_worker
            ),
        )


plugin = ServerPlugin()
