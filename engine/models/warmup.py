"""What a Stable Diffusion engine warms up at start-up (``engine/warmup.py`` runs it in the background).

* the model libraries: diffusers' UNet / VAE classes and single-file converters, transformers' CLIP text
  models, accelerate. The node library no longer imports them, so a server is ready without them; the
  first checkpoint load finds them imported when the warm-up got there first.
* the content hashes of the checkpoint files (newest first): a saved image records its checkpoint's sha256,
  which reads the whole file (seconds for 2-7 GB). Hashes go through the engine's ``FileHashes`` and its
  persistent index (``<models>/.atelier/hashes.json``), so each file version is read once, ever.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from atelier.engine.warmup import WarmupStep

if TYPE_CHECKING:
    from atelier.engine.runtime import Engine

log = logging.getLogger(__name__)

#: the model kinds whose files are hashed at start-up
HASHED_KINDS = ("checkpoints",)


def import_model_libraries() -> None:
    """Import what loading a checkpoint needs (a no-op once imported): the model libraries, through the one
    module that imports them (engine/models/libraries.py), and the checkpoint loader."""
    import atelier.engine.models.libraries  # noqa: F401
    import atelier.engine.models.load  # noqa: F401


def hash_model_files(engine: Engine, kinds: tuple[str, ...] = HASHED_KINDS) -> int:
    """Make the hashes of the model files of ``kinds`` known to the engine (newest first): from the
    persistent index, or read when the file version is new. Returns how many were not known in memory."""
    folders = engine.folders
    paths = []
    for kind in kinds:
        for name in folders.list_models(kind):
            try:
                path = folders.find_model(kind, name)
            except (OSError, ValueError):
                continue
            if path.is_file():
                paths.append(path)
    paths.sort(key=lambda p: p.stat().st_mtime_ns, reverse=True)
    read = 0
    for path in paths:
        if folders.hashes.cached(path) is None:
            folders.hashes.sha256(path)
            read += 1
    return read


def warmup_steps(engine: Engine, long_lived: bool = True) -> list[WarmupStep]:
    """Both steps for a server; only the imports for a one-shot ``atelier run`` (its job hashes the one
    checkpoint it uses, in the background from planning: ``FileHashes.prefetch``)."""

    def imports() -> None:
        with engine.models.exclusive():  # a job's first load waits for them rather than racing them
            import_model_libraries()

    steps: list[WarmupStep] = [("import diffusers and transformers", imports)]
    if long_lived:
        steps.append(("hash checkpoint files", lambda: hash_model_files(engine)))
    return steps
