"""Hypernetworks (A1111 / ComfyUI ``.pt`` files): small networks that change the keys and values of the
UNet's attention, applied as an attention patch (``attention.py``).

A file is a dict (read with ``torch.load(weights_only=True)``: no code runs) whose integer keys are
attention input widths (320, 640, 768, 1280, ...) holding two state dicts, the key network and the value
network (``linear.N.weight`` / ``.bias`` in ``Sequential`` order), plus its settings: ``activation_func``,
``is_layer_norm``, ``activate_output``, ``use_dropout`` (dropout does nothing at inference). For an
attention input of a width the file has, ``k += key_net(k) * strength`` and ``v += value_net(v) *
strength``, in self- and cross-attention alike, as ComfyUI applies them.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from .attention import AttentionInfo

__all__ = ["ACTIVATIONS", "Hypernetwork", "HypernetworkError", "load_hypernetwork"]

ACTIVATIONS: dict[str, type[torch.nn.Module]] = {
    "linear": torch.nn.Identity,
    "relu": torch.nn.ReLU,
    "leakyrelu": torch.nn.LeakyReLU,
    "elu": torch.nn.ELU,
    "swish": torch.nn.Hardswish,
    "tanh": torch.nn.Tanh,
    "sigmoid": torch.nn.Sigmoid,
    "softsign": torch.nn.Softsign,
    "mish": torch.nn.Mish,
}


class HypernetworkError(ValueError):
    """A hypernetwork file that cannot be used, naming the file and why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"hypernetwork {Path(path).name}: {reason}")


def _network(
    weights: Mapping[str, Tensor], activation: str, layer_norm: bool, activate_output: bool, path: Path
) -> torch.nn.Sequential:
    """One key or value network from its state dict: Linear [activation] [LayerNorm] per layer."""
    names = [k[: -len(".weight")] for k in weights if k.endswith(".weight")]
    layers: list[torch.nn.Module] = []
    i = 0
    while i < len(names):
        last = i == len(names) - (2 if layer_norm else 1)
        weight, bias = weights[names[i] + ".weight"], weights.get(names[i] + ".bias")
        if weight.ndim != 2 or bias is None:
            raise HypernetworkError(path, f"{names[i]} is not a linear layer with a bias")
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
        linear.load_state_dict({"weight": weight.float(), "bias": bias.float()})
        layers.append(linear)
        if activation != "linear" and (not last or activate_output):
            layers.append(ACTIVATIONS[activation]())
        if layer_norm:
            i += 1
            if i >= len(names):
                raise HypernetworkError(path, f"layer norm expected after {names[i - 1]}")
            norm = torch.nn.LayerNorm(weights[names[i] + ".weight"].shape[0])
            norm.load_state_dict(
                {"weight": weights[names[i] + ".weight"].float(), "bias": weights[names[i] + ".bias"].float()}
            )
            layers.append(norm)
        i += 1
    if not layers:
        raise HypernetworkError(path, "a width with no layers")
    return torch.nn.Sequential(*layers).eval().requires_grad_(False)


class Hypernetwork:
    """An attention patch: per input width, the key and value networks, scaled by ``strength``."""

    def __init__(
        self, nets: Mapping[int, tuple[torch.nn.Module, torch.nn.Module]], strength: float, name: str = ""
    ):
        self.nets = dict(nets)
        self.strength = strength
        self.name = name
        self._placed: dict[
            tuple[int, torch.device, torch.dtype], tuple[torch.nn.Module, torch.nn.Module]
        ] = {}
        self._lock = threading.Lock()

    def _on(self, width: int, like: Tensor) -> tuple[torch.nn.Module, torch.nn.Module]:
        key = (width, like.device, like.dtype)
        with self._lock:
            placed = self._placed.get(key)
            if placed is None:
                k_net, v_net = self.nets[width]
                placed = (
                    copy.deepcopy(k_net).to(like.device, like.dtype),
                    copy.deepcopy(v_net).to(like.device, like.dtype),
                )
                self._placed[key] = placed
            return placed

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, info: AttentionInfo) -> tuple[Tensor, Tensor, Tensor]:
        width = int(k.shape[-1])
        if width not in self.nets:
            return q, k, v
        k_net, v_net = self._on(width, k)
        return q, k + k_net(k) * self.strength, v + v_net(v) * self.strength


def load_hypernetwork(path: str | Path, strength: float = 1.0) -> Hypernetwork:
    """Read a hypernetwork file (``weights_only``: tensors and plain data only)."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise HypernetworkError(
            path, f"cannot be read as a weights-only torch file ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(data, dict):
        raise HypernetworkError(path, f"holds a {type(data).__name__}, not a dict")
    activation = str(data.get("activation_func", "linear"))
    if activation not in ACTIVATIONS:
        raise HypernetworkError(
            path, f"activation {activation!r} is not supported ({', '.join(ACTIVATIONS)})"
        )
    layer_norm = bool(data.get("is_layer_norm", False))
    activate_output = bool(data.get("activate_output", False))
    nets: dict[int, tuple[torch.nn.Module, torch.nn.Module]] = {}
    for key, pair in data.items():
        try:
            width = int(key)
        except (TypeError, ValueError):
            continue
        if (
            not isinstance(pair, (list, tuple))
            or len(pair) < 2
            or not all(isinstance(p, dict) for p in pair[:2])
        ):
            raise HypernetworkError(path, f"width {width} does not hold a key and a value network")
        k_net, v_net = (_network(p, activation, layer_norm, activate_output, path) for p in pair[:2])
        nets[width] = (k_net, v_net)
    if not nets:
        raise HypernetworkError(path, "no networks (no integer width keys): not a hypernetwork file")
    return Hypernetwork(nets, strength, path.stem)
