"""Stable Diffusion model families as validation traits (``engine/traits.py``).

A checkpoint loader's MODEL has the trait ``sd.family`` = its family; a ControlNet has its family, and
applying it to a conditioning makes the conditioning need that family, so a sampler that meets an SDXL
ControlNet's conditioning with an SD1.5 model is refused at validation, naming the ControlNet's node and
file and both families. Families come from headers only (safetensors headers, diffusers configs), through
the loaders' own detection, remembered per file version (``files.memo``); torch pickles are never unpickled here (their family is unknown: the run-time
check still catches a mismatch).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from atelier.engine.folders import Folders
from atelier.engine.traits import Trait

from .browse import family_label
from .controlnet_files import detect_controlnet
from .detect import detect_checkpoint
from .errors import CheckpointError
from .files import sniff_format

FAMILY = "sd.family"
#: a ControlNet's own family (another key: two ControlNets do not check each other, the model checks both)
CONTROLNET_FAMILY = "sd.controlnet_family"


def _readable_without_unpickling(path: Path) -> bool:
    return path.is_dir() or sniff_format(path) == "safetensors"


def _find(files: Folders, kind: str, name: str) -> Path | None:
    """The file, or None when it is missing (validation reports that on the input already)."""
    try:
        return files.find_model(kind, name)
    except (FileNotFoundError, ValueError):
        return None


def _family_trait(family: str, node_id: str, source: str, input_name: str, key: str = FAMILY) -> Trait:
    return Trait(
        key,
        family,
        node_id,
        source,
        input=input_name,
        value_label=family_label(family) or family,
    )


def checkpoint_family(files: Folders, node_id: str, name: str, input_name: str) -> list[Trait]:
    """The family trait of checkpoint ``name`` (none when it cannot be told from headers)."""
    path = _find(files, "checkpoints", name)
    if path is None or not _readable_without_unpickling(path):
        return []
    try:
        family = files.memo.get("sd.checkpoint_family", path, lambda p: detect_checkpoint(p).family)
    except CheckpointError:  # not a checkpoint it can read: the loader says why when it runs
        return []
    return [_family_trait(family, node_id, f"checkpoint {name!r}", input_name)]


def controlnet_family(files: Folders, node_id: str, name: str, input_name: str) -> list[Trait]:
    """The family trait of ControlNet ``name`` (none when it cannot be told from headers)."""
    path = _find(files, "controlnet", name)
    if path is None or not _readable_without_unpickling(path):
        return []
    try:
        family = files.memo.get("sd.controlnet_family", path, lambda p: detect_controlnet(p).family)
    except CheckpointError:
        return []
    return [_family_trait(family, node_id, f"ControlNet {name!r}", input_name, CONTROLNET_FAMILY)]


def needs_controlnet_family(controlnet: Iterable[Trait]) -> set[Trait]:
    """What a conditioning with this ControlNet attached needs: a model of the ControlNet's family."""
    return {t.as_need(FAMILY) for t in controlnet if t.key == CONTROLNET_FAMILY}
