"""The canvas editor's modules type-check: TypeScript (a devDependency in frontend/) checks their JSDoc.

Like the browser tests, this skips with a reason when the frontend's npm packages are missing, and fails
instead under CI (``CI`` set): ``./dev setup`` installs them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TSC = ROOT / "frontend" / "node_modules" / ".bin" / "tsc"
CONFIG = ROOT / "frontend" / "jsconfig.json"


def _missing(reason: str) -> None:
    # as conftest.py does for Chromium: a skip on a developer's machine, a failure under CI
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        pytest.fail(f"the frontend type check cannot run: {reason} (./dev setup installs it)", pytrace=False)
    pytest.skip(f"the frontend type check needs {reason}; run ./dev setup")


def test_frontend_modules_type_check() -> None:
    if not TSC.is_file() or shutil.which("node") is None:
        _missing("Node.js and the frontend's npm packages (npm ci in frontend/)")
    proc = subprocess.run(
        [str(TSC), "-p", str(CONFIG.relative_to(ROOT))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"tsc -p frontend/jsconfig.json failed:\n{proc.stdout}{proc.stderr}"
