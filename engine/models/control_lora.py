"""Control-LoRA (Stability's ``control-lora-*.safetensors``): a ControlNet stored as LoRA deltas on the
encoder of the model it is used with.

The file (marked by a ``lora_controlnet`` tensor, original single-file names without a prefix) holds, for
the ControlNet's copy of the UNet encoder, low-rank ``X.up``/``X.down`` pairs whose product is added to the
weight ``X.weight``, plus full tensors (biases, norms, and the whole hint encoder ``input_hint_block``, zero
convolutions ``zero_convs`` and ``middle_block_out``). As in ComfyUI, the ControlNet is built from the
sampled model's UNet (its encoder weights, with the model's LoRAs as they are applied during sampling) and
the file: every file tensor replaces the UNet's, then each ``up @ down`` is added; the encoder tensors
neither changes stay the UNet's own (shared, as in ComfyUI: the model's weight patches are applied in
place, so they follow them, and a build is only used with the patches it was made under). Names go through the
project's ControlNet name map (``controlnet_original_names``, built on ``names.py``), in reverse.

ControlNetLoader gives a :class:`ControlLoraHandle` (the file's tensors); the sampler's model call builds
the ControlNet for the model it runs (kept on the handle for the next steps and runs of that same model);
DiffControlNetLoader, which has the model, builds it at once.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from atelier.engine.model_loader import LoadOptions, ModelLoader
from atelier.engine.models.controlnet_files import ControlNetInfo, controlnet_original_names
from atelier.engine.models.errors import CheckpointError
from atelier.engine.models.files import open_single_file

#: the tensor that marks a Control-LoRA file
MARKER = "lora_controlnet"
HINT_PREFIX = "input_hint_block."
#: the parts of a UNet a ControlNet copies (diffusers names)
_ENCODER = ("conv_in.", "time_embedding.", "add_embedding.", "class_embedding.", "down_blocks.", "mid_block.")
#: context widths of the families' text encoders, to name a file's family
_FAMILY_BY_CONTEXT = {768: "sd15", 1024: "sd2", 2048: "sdxl"}


def is_control_lora(path: str | Path) -> bool:
    return MARKER in open_single_file(path)


@dataclass(frozen=True)
class ControlLoraWeights:
    """A Control-LoRA file's tensors (original names, as stored) and what they tell."""

    path: str
    tensors: Mapping[str, torch.Tensor]

    @property
    def context_dim(self) -> int | None:
        key = next((k for k in self.tensors if k.endswith("attn2.to_k.down")), None)
        if key is not None:
            return int(self.tensors[key].shape[1])
        key = next((k for k in self.tensors if k.endswith("attn2.to_k.weight")), None)
        return None if key is None else int(self.tensors[key].shape[1])

    @property
    def family(self) -> str:
        """From the text encoder width (``sdxl`` for Stability's files); a file of another width is
        ``sdxl``-like if it changes a size embedding (``label_emb``), else ``sd15``-like."""
        family = _FAMILY_BY_CONTEXT.get(self.context_dim or 0)
        if family is None:
            family = "sdxl" if any(k.startswith("label_emb.") for k in self.tensors) else "sd15"
        return family

    @property
    def rank(self) -> int | None:
        key = next((k for k in self.tensors if k.endswith(".down")), None)
        return None if key is None else int(self.tensors[key].shape[0])

    def hint_embedding(self) -> tuple[int, tuple[int, ...]]:
        """(hint image channels, diffusers ``conditioning_embedding_out_channels``) of the hint encoder:
        convolutions at even indices, the last one the zero convolution out; the widths are those of the
        first and of every second one after it."""
        convs = sorted(
            int(k.split(".")[1]) for k in self.tensors if k.startswith(HINT_PREFIX) and k.endswith(".weight")
        )
        if len(convs) < 3:
            raise ValueError(f"a hint encoder of {len(convs)} convolutions")
        shapes = [tuple(self.tensors[f"{HINT_PREFIX}{n}.weight"].shape) for n in convs]
        widths = [shapes[0][0]] + [shapes[1 + n][0] for n in range(1, len(convs) - 2, 2)]
        return int(shapes[0][1]), tuple(int(w) for w in widths)


def read_control_lora(path: str | Path) -> ControlLoraWeights:
    index = open_single_file(path)
    if MARKER not in index:
        raise CheckpointError(path, f"not a Control-LoRA (no {MARKER!r} tensor)")
    tensors = {k: index.read(k) for k in index.keys() if k != MARKER}
    return ControlLoraWeights(str(path), tensors)


def build_control_lora(weights: ControlLoraWeights, unet: torch.nn.Module) -> Any:
    """A diffusers ``ControlNetModel`` made of ``unet``'s encoder and the Control-LoRA's tensors, on the
    UNet's device and in its dtype. Raises CheckpointError (naming the file) when they do not fit."""
    from atelier.engine.models.build import assign_weights, build_empty  # diffusers: with a model only
    from atelier.engine.models.libraries import ControlNetModel

    path = weights.path
    try:
        channels, embedding = weights.hint_embedding()
    except (KeyError, ValueError) as exc:
        raise CheckpointError(path, f"incomplete Control-LoRA hint encoder: {exc}") from None
    module = build_empty(
        lambda: ControlNetModel.from_unet(
            unet,
            conditioning_embedding_out_channels=embedding,
            load_weights_from_unet=False,
            conditioning_channels=channels,
        )
    )
    wanted = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    to_diffusers = {old: new for new, old in controlnet_original_names(wanted, unet.config).items()}
    param = next(unet.parameters())
    state: dict[str, torch.Tensor] = {
        k: v.detach() for k, v in unet.state_dict().items() if k.startswith(_ENCODER) and k in wanted
    }
    deltas: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in weights.tensors.items():
        module_name, _, leaf = key.rpartition(".")
        if leaf in ("up", "down"):
            deltas.setdefault(module_name, {})[leaf] = value
            continue
        target = to_diffusers.get(key)
        if target is None:
            raise CheckpointError(path, f"tensor {key} has no place in a ControlNet for this model")
        state[target] = value
    for module_name, pair in deltas.items():
        target = to_diffusers.get(module_name + ".weight")
        if target is None or set(pair) != {"up", "down"} or target not in state:
            raise CheckpointError(
                path, f"LoRA pair {module_name}.up/.down has no weight to change in this model"
            )
        base = state[target].to(param.device, torch.float32)
        up = pair["up"].to(param.device, torch.float32).flatten(1)
        down = pair["down"].to(param.device, torch.float32).flatten(1)
        if up.shape[1] != down.shape[0] or up.shape[0] * down.shape[1] != base.numel():
            raise CheckpointError(
                path,
                f"LoRA pair {module_name} ({tuple(pair['up'].shape)} x {tuple(pair['down'].shape)}) does not fit "
                f"the model's {tuple(base.shape)} weight",
            )
        state[target] = base + (up @ down).reshape(base.shape)
    return assign_weights(
        module, state, device=param.device, dtype=param.dtype, path=path, component="controlnet"
    )


class BuiltControlNets:
    """The ControlNet a Control-LoRA handle last built, with the UNet and weight patches it was built for
    (kept by reference, so that identity says when to build again)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entry: tuple[Any, Any, Any] | None = None

    def get(self, unet: Any, patches: Any, build: Any) -> Any:
        with self._lock:
            if self._entry is not None and self._entry[0] is unet and self._entry[1] is patches:
                return self._entry[2]
            net = build()
            self._entry = (unet, patches, net)
            return net

    def nbytes(self) -> int:
        from .handles import module_bytes

        entry = self._entry
        return 0 if entry is None else module_bytes(entry[2])


@dataclass(frozen=True, eq=False)
class ControlLoraHandle:
    """CONTROL_NET carrying a Control-LoRA: its tensors, built into a ControlNet for each model it is
    sampled with (the last one kept)."""

    weights: ControlLoraWeights
    name: str = ""
    kind: str = "Control-LoRA"
    built: BuiltControlNets = field(default_factory=BuiltControlNets, repr=False)

    @property
    def info(self) -> ControlLoraWeights:
        return self.weights

    @property
    def family(self) -> str:
        return self.weights.family

    def __atelier_nbytes__(self) -> int:
        tensors = sum(t.numel() * t.element_size() for t in self.weights.tensors.values())
        return tensors + self.built.nbytes()

    def mismatch(self, unet_config: Mapping[str, Any]) -> str | None:
        """What keeps this Control-LoRA from a UNet of ``unet_config`` (seen before building), or None."""
        context = self.weights.context_dim
        if context is not None and context != unet_config.get("cross_attention_dim"):
            return f"cross-attention width {context} vs the model's {unet_config.get('cross_attention_dim')}"
        zero = self.weights.tensors.get("zero_convs.0.0.weight")
        widths = list(unet_config.get("block_out_channels", ()))
        if zero is not None and widths and int(zero.shape[0]) != widths[0]:
            return f"first block width {int(zero.shape[0])} vs the model's {widths[0]}"
        return None

    def net_for(self, unet: torch.nn.Module, patches: Any) -> Any:
        """The ControlNet for ``unet`` as patched now (built on first use for that UNet and patch set)."""
        return self.built.get(unet, patches, lambda: build_control_lora(self.weights, unet))


def load_control_lora_handle(models: ModelLoader, path: Path, name: str = "") -> ControlLoraHandle:
    """A Control-LoRA file's tensors, read once per file version by ``models``."""
    weights = models.load(path, _read_loader)
    return ControlLoraHandle(weights, name=name or path.name)


def _read_loader(path: Path, options: LoadOptions) -> ControlLoraWeights:
    return read_control_lora(path)


def control_lora_info(weights: ControlLoraWeights, net: Any) -> ControlNetInfo:
    """What a built Control-LoRA ControlNet is, as a ControlNet handle tells it."""
    config = {k: v for k, v in net.config.items() if not k.startswith("_")}
    return ControlNetInfo(weights.path, weights.family, "control_lora", config)
