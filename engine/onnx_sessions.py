"""onnxruntime sessions for user-supplied ONNX files (face detectors, pose and depth models), on the CPU
provider with onnxruntime's own logging quiet. Generic: callers say what the file is for in their errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class OnnxRuntimeMissing(ImportError):
    """onnxruntime cannot be imported (its message is the import error's)."""


def cpu_session(path: Path) -> Any:
    """An ``onnxruntime.InferenceSession`` of ``path``. Raises :class:`OnnxRuntimeMissing`, or ValueError
    naming the file when onnxruntime cannot run it."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise OnnxRuntimeMissing(str(exc)) from exc
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ValueError(f"{path.name} is not an ONNX model onnxruntime can run: {exc}") from exc
