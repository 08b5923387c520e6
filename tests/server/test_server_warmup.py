"""Start-up warm-up: it runs beside the server (never before it answers), its failures are logged, and the
Stable Diffusion steps leave the checkpoints' hashes where a fresh process finds them."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from atelier.engine import hashing
from atelier.engine.models.warmup import hash_model_files, warmup_steps
from atelier.engine.server.app import create_app
from atelier.engine.server.settings import Settings
from atelier.engine.warmup import run_warmup
from tests.server.harness import engine_in


def test_the_server_answers_while_the_warmup_is_still_running(tmp_path: Path, models_dir: Path) -> None:
    engine = engine_in(tmp_path, models_dir)
    release, ran = threading.Event(), []

    def slow() -> None:
        assert release.wait(30), "never released"
        ran.append("slow")

    engine.warmup_steps = lambda long_lived=True: [("slow", slow)]  # type: ignore[method-assign]
    app = create_app(engine, Settings(database=tmp_path / "atelier.db"))
    with TestClient(app, base_url="http://127.0.0.1:8188") as client:
        assert client.get("/atelier/v1/queue").status_code == 200  # ready while the step waits
        assert app.state.warmup.is_alive() and ran == []
        release.set()
        app.state.warmup.join(30)
        assert ran == ["slow"]


def test_a_failing_step_is_logged_and_the_next_runs(
    tmp_path: Path, models_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = engine_in(tmp_path, models_dir)
    ran: list[str] = []

    def boom() -> None:
        raise RuntimeError("no such library")

    engine.warmup_steps = lambda long_lived=True: [("boom", boom), ("after", lambda: ran.append("after"))]  # type: ignore[method-assign]
    app = create_app(engine, Settings(database=tmp_path / "atelier.db"))
    with caplog.at_level(logging.WARNING, logger="atelier.engine.warmup"):
        with TestClient(app, base_url="http://127.0.0.1:8188") as client:
            app.state.warmup.join(30)
            assert client.get("/atelier/v1/queue").status_code == 200  # the server is intact
    assert ran == ["after"]
    assert "warm-up step 'boom' failed" in caplog.text and "no such library" in caplog.text
    assert run_warmup([("boom", boom)]) == {"boom": None}  # never raised


def test_sd_warmup_hashes_checkpoints_once_for_every_later_process(
    tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    root = tmp_path / "models"
    shutil.copytree(models_dir, root)
    reads: list[Path] = []
    real = hashing.sha256_of_file
    monkeypatch.setattr(hashing, "sha256_of_file", lambda p: reads.append(p) or real(p))
    engine = engine_in(tmp_path, root)
    names = [s for s, _ in warmup_steps(engine)]
    assert names == ["import diffusers and transformers", "hash checkpoint files"]
    assert [s for s, _ in warmup_steps(engine, long_lived=False)] == names[:1]  # `atelier run`: imports only
    assert run_warmup(warmup_steps(engine))["hash checkpoint files"] is not None
    checkpoints = [
        engine.folders.find_model("checkpoints", n) for n in engine.folders.list_models("checkpoints")
    ]
    files = [p for p in checkpoints if p.is_file()]
    assert files and sorted(reads) == sorted(p.resolve() for p in files)
    for path in files:  # what a saved image will record, without reading the file again
        assert engine.folders.hashes.cached(path) == real(path.resolve())
    reads.clear()
    fresh = engine_in(tmp_path / "again", root)  # a new process: the index under the models root answers
    assert hash_model_files(fresh) == len(files) and reads == []
    assert fresh.folders.sha256(files[0]) == real(files[0].resolve()) and reads == []


def test_loads_wait_for_the_warmup_imports() -> None:
    """Two threads importing diffusers at once can see a half-initialised module: the warm-up imports under
    the model loader's ``exclusive()``, which a load waits for."""
    from atelier.engine.model_loader import ModelLoader

    models = ModelLoader("cpu")
    order: list[str] = []
    done = threading.Event()

    def load() -> None:
        models.load(Path(__file__), lambda path, options: order.append("load"))
        done.set()

    with models.exclusive():
        thread = threading.Thread(target=load)
        thread.start()
        assert not done.wait(0.3)  # held off while the imports run
        order.append("imports")
    thread.join(10)
    assert order == ["imports", "load"]


def test_no_hash_index_is_written_where_there_is_no_models_root(tmp_path: Path) -> None:
    import hashlib

    engine = engine_in(tmp_path, tmp_path / "no-models")
    engine.folders.ensure()
    image = tmp_path / "input.png"
    image.write_bytes(b"not really a picture")
    assert engine.folders.sha256(image) == hashlib.sha256(b"not really a picture").hexdigest()
    assert not (tmp_path / "no-models").exists()  # a run from the repository writes nothing into it
