"""A real ``atelier serve`` process on loopback, and small clients for it (used by the server tests and by
``bench/server.py``)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from websockets.sync.client import ClientConnection, connect

from atelier.engine.runtime import Engine, EngineConfig, build_engine

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / "workflows"
TERMINAL = ("job_finished", "job_failed", "job_interrupted")

# ``python -m engine.cli`` runs the module twice (as __main__ and as engine.cli): the subcommands that
# engine.server.cli registers land in the second copy, so start through ``engine.cli.main`` as the
# ``atelier`` script does.
SERVE = "import sys; from atelier.engine.cli import main; sys.exit(main(sys.argv[1:]))"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_models(root: Path) -> Path:
    """A models root with a tiny SD1.5 checkpoint and a file that is no checkpoint at all (it makes the
    loader node fail at run time)."""
    from atelier.engine.models.tiny import write_tiny_checkpoint

    ckpts = root / "checkpoints"
    ckpts.mkdir(parents=True, exist_ok=True)
    if not (ckpts / "tiny15.safetensors").exists():
        write_tiny_checkpoint("sd15", ckpts / "tiny15.safetensors", seed=0)
    (ckpts / "broken.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json" + b"\0" * 64)
    return root


def serve_command(args: list[str]) -> list[str]:
    return [sys.executable, "-c", SERVE, "serve", *args]


def server_env(torch_threads: int | None = 1) -> dict[str, str]:
    """The server's environment: offline, no ATELIER_* settings from the caller's shell, and one torch
    thread by default. Tiny models gain nothing from more, and with the clients' threads on the same
    few cores OpenMP's spinning threads oversubscribe the CPU: jobs of 20 ms then stall for seconds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATELIER_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO))
    if torch_threads:
        env.update(OMP_NUM_THREADS=str(torch_threads), MKL_NUM_THREADS=str(torch_threads))
    return env


@dataclass
class Server:
    """One server process. ``start()`` waits until ``GET /atelier/v1/system`` answers; ``stop()`` ends it
    (SIGTERM, then SIGKILL) and is safe to call twice."""

    root: Path
    models: Path
    token: str | None = None
    extra: list[str] = field(default_factory=list)
    torch_threads: int | None = 1
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def database(self) -> Path:
        return self.root / "atelier.db"

    def folder(self, kind: str) -> Path:
        return self.root / kind

    def args(self) -> list[str]:
        out = [
            "--port",
            str(self.port),
            "--database",
            str(self.database),
            "--models-dir",
            str(self.models),
            "--output-dir",
            str(self.folder("output")),
            "--input-dir",
            str(self.folder("input")),
            "--temp-dir",
            str(self.folder("temp")),
        ]
        if self.token:
            out += ["--token", self.token]
        return out + self.extra

    def start(self, timeout: float = 60.0) -> Server:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - handed to the process
        self.proc = subprocess.Popen(
            serve_command(self.args()),
            cwd=self.root,
            env=server_env(self.torch_threads),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.base + "/atelier/v1/system", headers=headers, timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the server did not answer within {timeout} s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        return proc.returncode

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace")[-5000:] if path.exists() else ""

    def client(self, **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=30, **kw)

    def ws(self, query: str = "", path: str | None = None, **kw: Any) -> ClientConnection:
        """A websocket client: ComfyUI's protocol on ``/ws`` when ``query`` has a ``clientId``, Atelier's
        on ``/atelier/v1/ws`` otherwise (or the ``path`` given)."""
        if self.token and "token=" not in query:
            query = f"{query}&token={self.token}" if query else f"token={self.token}"
        if path is None:
            path = "/ws" if "clientId=" in query else "/atelier/v1/ws"
        return connect(f"{self.ws_base}{path}" + (f"?{query}" if query else ""), open_timeout=10, **kw)


# -- workflows ---------------------------------------------------------------------------------------


def load_workflow(name: str) -> dict[str, Any]:
    return json.loads((WORKFLOWS / name).read_text())


def portrait(**overrides: Any) -> dict[str, Any]:
    """A job request for workflows/portrait.json on the tiny checkpoint at 64 px."""
    values = {"checkpoint": "tiny15.safetensors", "steps": 2, "width": 64, "height": 64, **overrides}
    return {"workflow": load_workflow("portrait.json"), "overrides": values}


def comfy_prompt(
    seed: int = 7, steps: int = 2, prefix: str = "ComfyUI", ckpt: str = "tiny15.safetensors", size: int = 64
) -> dict[str, Any]:
    """The default ComfyUI API-format txt2img graph, small."""
    return {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a portrait, soft light", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": seed,
                "steps": steps,
                "cfg": 7.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": prefix, "images": ["8", 0]}},
    }


# -- websocket messages --------------------------------------------------------------------------------


def parse_atelier_preview(frame: bytes) -> tuple[dict[str, Any], bytes]:
    (n,) = struct.unpack(">I", frame[:4])
    return json.loads(frame[4 : 4 + n]), frame[4 + n :]


def parse_comfy_preview(frame: bytes) -> tuple[int, int, bytes]:
    kind, fmt = struct.unpack(">II", frame[:8])
    return kind, fmt, frame[8:]


def messages(ws: ClientConnection, timeout: float = 60.0) -> Iterator[str | bytes]:
    """Messages until ``timeout`` seconds pass without one arriving (then TimeoutError)."""
    while True:
        yield ws.recv(timeout=timeout)


def follow(ws: ClientConnection, job: str, timeout: float = 60.0) -> list[dict[str, Any] | bytes]:
    """Atelier-format messages about ``job`` (JSON decoded; binary previews kept as bytes) up to and
    including its terminal event."""
    out: list[dict[str, Any] | bytes] = []
    for m in messages(ws, timeout):
        if isinstance(m, bytes):
            if parse_atelier_preview(m)[0].get("job") == job:
                out.append(m)
            continue
        d = json.loads(m)
        if d.get("job") != job:
            continue
        out.append(d)
        if d["type"] in TERMINAL:
            return out
    raise AssertionError("unreachable")


def follow_comfy(ws: ClientConnection, prompt_id: str, timeout: float = 60.0) -> list[dict[str, Any] | bytes]:
    """ComfyUI-format messages until ``executing`` with ``node: null`` for ``prompt_id``."""
    out: list[dict[str, Any] | bytes] = []
    for m in messages(ws, timeout):
        if isinstance(m, bytes):
            out.append(m)
            continue
        d = json.loads(m)
        out.append(d)
        data = d.get("data", {})
        if d["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
            return out
    raise AssertionError("unreachable")


def wait_job(client: httpx.Client, job: str, timeout: float = 60.0, until=TERMINAL) -> dict[str, Any]:
    """Poll ``GET /atelier/v1/jobs/{id}`` until the job is finished (any status but queued/running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = client.get(f"/atelier/v1/jobs/{job}").json()
        if view["status"] not in ("queued", "running"):
            return view
        time.sleep(0.02)
    raise AssertionError(f"job {job} did not finish within {timeout} s: {view}")


def raw_get(port: int, target: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """A GET with the request target sent byte for byte (HTTP clients normalise ``..`` away)."""
    lines = [f"GET {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def engine_in(root: Path, models_dir: Path, **config: Any) -> Engine:
    """An engine on CPU over ``models_dir`` whose output, input and temp folders are under ``root``."""
    return build_engine(
        EngineConfig(
            device="cpu",
            models_dir=models_dir,
            output_dir=root / "output",
            input_dir=root / "input",
            temp_dir=root / "temp",
            **config,
        )
    )


@contextlib.contextmanager
def served_in_thread(app: Any, port: int, name: str, log_level: str = "warning") -> Iterator[uvicorn.Server]:
    """``app`` served by uvicorn on loopback ``port`` in a thread of this process (its lifespan runs), until
    the block ends."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level=log_level))
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the in-process server did not start"
        time.sleep(0.02)
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(30)
