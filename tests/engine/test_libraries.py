"""The model libraries are imported through one module (engine/models/libraries.py), so that two threads
asking for them at once both get them: the start-up warm-up thread and a job loading its first model."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LIBRARIES = ("accelerate", "diffusers", "transformers")

#: the warm-up's import step on a thread, and a job's first model code on the main thread meanwhile
PROBE = """
import threading, time
from atelier.engine.models.warmup import import_model_libraries

failures = []
def warm():
    try:
        import_model_libraries()
    except Exception as exc:
        failures.append(f"warm-up: {type(exc).__name__}: {exc}")
thread = threading.Thread(target=warm)
thread.start()
time.sleep(0.05)
try:
    from atelier.engine.models.build import empty_vae  # what the first checkpoint load imports
    from atelier.engine.models.libraries import CLIPVisionModelWithProjection, ControlNetModel
except Exception as exc:
    failures.append(f"job: {type(exc).__name__}: {exc}")
thread.join()
print("; ".join(failures) or "ok")
"""


def test_a_job_and_the_warm_up_import_the_libraries_at_once() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"


def _imported_libraries(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {n.split(".")[0] for n in names if n.split(".")[0] in LIBRARIES}
    return found


def test_only_the_libraries_module_imports_the_model_libraries() -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(found)
        for folder in ("engine", "nodes")
        for path in sorted((REPO / folder).rglob("*.py"))
        if path.name != "libraries.py" and (found := _imported_libraries(path))
    }
    assert offenders == {}
