"""Engines for tests, built through the composition root like the CLI's and the server's."""

from __future__ import annotations

from pathlib import Path

from atelier.engine.model_loader import ModelLoader
from atelier.engine.runtime import Engine, EngineConfig, build_engine


def make_engine(
    models_root: Path, tmp_path: Path, models: ModelLoader | None = None, device: str = "cpu"
) -> Engine:
    """An engine over ``models_root`` with its own output/input/temp folders under ``tmp_path`` (created),
    sharing ``models`` (a session's model loader: loaded weights are read-only to nodes) when given."""
    engine = build_engine(
        EngineConfig(
            device=device,
            models_dir=models_root,
            output_dir=tmp_path / "out",
            input_dir=tmp_path / "in",
            temp_dir=tmp_path / "tmp",
        ),
        models=models,
    )
    engine.folders.ensure()
    return engine
