"""Reading single model files: header checks, tensor names / shapes / dtypes, tensors on demand.

``.safetensors`` headers are parsed and validated here (so that empty, garbage and truncated files fail
with a ``CheckpointError`` that says so, before any library sees them); torch pickles (``.ckpt``, ``.pt``)
are only ever read through ``torch.load(weights_only=True)``. Detection works on a :class:`TensorIndex`
(names and shapes without reading tensor data) and loading reads tensors from it one at a time.
"""

import json
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch

from atelier.engine.models.errors import CheckpointError
from atelier.engine.models.info import SourceFormat
from atelier.engine.models.names import SD1_CLIP_PREFIX

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
TORCH_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_MAX_HEADER = 100 * 1024 * 1024


class TensorIndex:
    """Names, shapes and dtypes of the tensors of a single file, plus a way to read one tensor."""

    def __init__(
        self,
        path: Path,
        source_format: SourceFormat,
        entries: Mapping[str, tuple[tuple[int, ...], str]],
        read: Callable[[str], torch.Tensor],
        read_on: Callable[[str, str], torch.Tensor] | None = None,
    ) -> None:
        self.path = path
        self.source_format: SourceFormat = source_format
        self.entries = dict(entries)
        self._read = read
        self._read_on = read_on

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def keys(self) -> list[str]:
        return list(self.entries)

    def shape(self, key: str) -> tuple[int, ...]:
        return self.entries[key][0]

    def dtype(self, key: str) -> str:
        return self.entries[key][1]

    def read(self, key: str) -> torch.Tensor:
        return self._read(key)

    @property
    def reads_on_device(self) -> bool:
        """Whether :meth:`read_on` reads straight onto a device (safetensors files) rather than through
        the host."""
        return self._read_on is not None

    def read_on(self, key: str, device: str | torch.device) -> torch.Tensor:
        """One tensor on ``device``: read there directly where the format allows (safetensors), else read
        on the host and moved."""
        kind = torch.device(device)
        if kind.type == "cpu" or self._read_on is None:
            return self._read(key).to(kind)
        return self._read_on(key, str(kind))

    def read_prefixed(self, prefix: str) -> dict[str, torch.Tensor]:
        return {key: self._read(key) for key in self.entries if key.startswith(prefix)}


_SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


def sniff_format(path: Path) -> Literal["safetensors", "zip", "pickle", "empty", "unknown"]:
    """What a file's first bytes say it is."""
    with path.open("rb") as f:
        head = f.read(16)
    if not head:
        return "empty"
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if len(head) >= 9 and head[8:9] == b"{":
        (header_len,) = struct.unpack("<Q", head[:8])
        if header_len <= path.stat().st_size - 8:
            return "safetensors"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] in range(2, 6):
        return "pickle"
    return "unknown"


def read_safetensors_header(path: Path) -> tuple[dict[str, tuple[tuple[int, ...], str]], dict[str, str]]:
    """Parse and validate a safetensors header: ({name: (shape, dtype)}, metadata). Raises CheckpointError
    for an empty, truncated or garbage file."""
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(path, "file is empty (0 bytes)")
    if size < 8:
        raise CheckpointError(path, f"file is only {size} bytes: not a safetensors file (truncated?)")
    with path.open("rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > size - 8 or header_len > _MAX_HEADER:
            raise CheckpointError(
                path,
                f"not a valid safetensors file: header length field says {header_len} bytes but the file has "
                f"{size} bytes (garbage header or truncated file)",
            )
        raw = f.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(path, f"not a valid safetensors file: header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(path, "not a valid safetensors file: header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    entries: dict[str, tuple[tuple[int, ...], str]] = {}
    data_end = 0
    for name, spec in header.items():
        try:
            dtype = _SAFETENSORS_DTYPES.get(spec["dtype"], str(spec["dtype"]).lower())
            shape = tuple(int(d) for d in spec["shape"])
            begin, end = (int(x) for x in spec["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(
                path, f"not a valid safetensors file: bad header entry for {name!r}"
            ) from None
        if end < begin:
            raise CheckpointError(path, f"not a valid safetensors file: bad data offsets for {name!r}")
        data_end = max(data_end, end)
        entries[str(name)] = (shape, dtype)
    available = size - 8 - header_len
    if data_end > available:
        raise CheckpointError(
            path,
            f"file is truncated: the header describes {data_end} bytes of tensor data but only {available} "
            f"are present ({size} bytes in the file)",
        )
    return entries, {str(k): str(v) for k, v in dict(metadata).items()}


def _safetensors_index(path: Path) -> TensorIndex:
    from safetensors import safe_open

    entries, _ = read_safetensors_header(path)
    handles: dict[str, Any] = {}  # device -> open file: safetensors puts each tensor there directly

    def read_on(key: str, device: str) -> torch.Tensor:
        if device not in handles:
            try:
                handles[device] = safe_open(str(path), framework="pt", device=device)
            except Exception as exc:  # safetensors raises its own error types
                raise CheckpointError(path, f"cannot open as safetensors: {exc}") from None
        try:
            tensor: torch.Tensor = handles[device].get_tensor(key)
        except Exception as exc:
            raise CheckpointError(path, f"cannot read tensor {key!r}: {exc}") from None
        return tensor

    return TensorIndex(path, "safetensors", entries, lambda key: read_on(key, "cpu"), read_on)


def read_torch_file(path: Path) -> Any:
    """What a ``.ckpt``/``.pt``/``.pth`` file holds, through ``torch.load(weights_only=True)`` only: a file
    that needs more than tensors and plain containers is refused with a CheckpointError naming it."""
    try:
        try:
            data = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc) or "Weights only" in str(exc):
            raise CheckpointError(
                path,
                "refused to unpickle: the file holds Python objects besides tensors, and only "
                f"torch.load(weights_only=True) is allowed ({text}). Convert it to .safetensors.",
            ) from None
        raise CheckpointError(
            path, f"not a readable PyTorch checkpoint (corrupt or truncated?): {text}"
        ) from None
    return data


def load_torch_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A ``.ckpt``/``.pt``/``.pth`` file through ``torch.load(weights_only=True)``, unwrapping
    ``state_dict``. Only tensors are kept."""
    data = read_torch_file(path)
    while isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise CheckpointError(path, f"PyTorch file holds a {type(data).__name__}, not a state dict")
    return {str(k): v for k, v in data.items() if isinstance(v, torch.Tensor)}


def index_state_dict(
    state_dict: Mapping[str, torch.Tensor], path: Path, source_format: SourceFormat = "torch"
) -> TensorIndex:
    entries = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in state_dict.items()}
    return TensorIndex(path, source_format, entries, lambda key: state_dict[key])


def open_single_file(path: str | Path) -> TensorIndex:
    """Open a single-file model (``.safetensors`` or a torch file) for detection and loading."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "file not found")
    if path.is_dir():
        raise CheckpointError(path, "is a folder, not a single-file checkpoint")
    suffix = path.suffix.lower()
    if suffix not in SAFETENSORS_SUFFIXES + TORCH_SUFFIXES:
        allowed = ", ".join(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)
        raise CheckpointError(
            path, f"unsupported file extension {suffix or '(none)'!r} (expected one of {allowed})"
        )
    kind = sniff_format(path)
    if kind == "empty":
        raise CheckpointError(path, "file is empty (0 bytes)")
    if suffix in SAFETENSORS_SUFFIXES:
        if kind in ("zip", "pickle"):
            raise CheckpointError(
                path,
                f"has a {suffix} extension but holds a PyTorch pickle ({kind}); rename it to .ckpt "
                "(it will then be read with weights_only=True)",
            )
        return normalise_sd1_clip_keys(_safetensors_index(path))
    if kind == "safetensors":
        return normalise_sd1_clip_keys(_safetensors_index(path))
    if kind not in ("zip", "pickle"):
        raise CheckpointError(
            path, "neither a safetensors file nor a PyTorch checkpoint (garbage or truncated)"
        )
    return normalise_sd1_clip_keys(index_state_dict(load_torch_state_dict(path), path, "torch"))


def normalise_sd1_clip_keys(index: TensorIndex) -> TensorIndex:
    """Very old SD1 files store CLIP as ``cond_stage_model.transformer.encoder.*`` (no ``text_model.``)."""
    old = [
        k
        for k in index.keys()
        if k.startswith(SD1_CLIP_PREFIX) and not k.startswith(SD1_CLIP_PREFIX + "text_model.")
    ]
    if not old or any(k.startswith(SD1_CLIP_PREFIX + "text_model.") for k in index.keys()):
        return index
    rename = {k: SD1_CLIP_PREFIX + "text_model." + k[len(SD1_CLIP_PREFIX) :] for k in old}
    entries = {rename.get(k, k): v for k, v in index.entries.items()}
    back = {v: k for k, v in rename.items()}
    return TensorIndex(
        index.path,
        index.source_format,
        entries,
        lambda key: index.read(back.get(key, key)),
        (lambda key, device: index.read_on(back.get(key, key), device)) if index.reads_on_device else None,
    )


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a single ``.safetensors`` / ``.ckpt`` file (weights_only), with clear errors."""
    index = open_single_file(path)
    return {k: index.read(k) for k in index.keys()}
