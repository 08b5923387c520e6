"""Start-up stays light: the node registry and the server import neither diffusers nor transformers (they
load with the first model). Several seconds of every fresh process's first job hang on it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import sys
from atelier.engine.registry import default_registry
from atelier.engine.server import app
registry = default_registry()
assert len(registry) > 100, len(registry)
heavy = sorted(m for m in ("diffusers", "transformers", "accelerate") if m in sys.modules)
print(",".join(heavy))
"""


def test_the_registry_and_server_import_no_model_library() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "", f"imported at start-up: {proc.stdout.strip()}"
