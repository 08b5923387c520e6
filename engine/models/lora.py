"""LoRA files (kohya / A1111 / LyCORIS LoCon, and diffusers/PEFT) mapped onto our model parameters.

Supported key layouts, per LoRA module ``<name>.<part>``:

- kohya names: ``lora_unet_<module>``, ``lora_te_<module>`` (SD1/SD2 text encoder), ``lora_te1_`` /
  ``lora_te2_`` (SDXL's CLIP-L / OpenCLIP-G). ``<module>`` is the module path with ``.`` written as ``_``,
  in either of two namings for the UNet: diffusers' (``down_blocks_0_attentions_0_..._attn1_to_q``,
  what kohya writes for SD1) or the original LDM one (``input_blocks_4_1_..._attn1_to_q``, what kohya
  writes for SDXL). Text encoders use transformers' names (``text_model_encoder_layers_0_mlp_fc1``).
- diffusers / PEFT names: ``unet.<dotted module>``, ``text_encoder.<...>``, ``text_encoder_2.<...>``;
  dotted original names: ``diffusion_model.<ldm module>``.
- parts: ``lora_down.weight`` / ``lora_up.weight`` (or ``lora_A`` / ``lora_B``, ``lora.down`` / ``lora.up``),
  optional ``alpha`` (absent: alpha = rank) and ``lora_mid.weight`` (LoCon with Tucker decomposition).
  Linear and conv layers both work (LoCon: 3x3 ``lora_down``, 1x1 ``lora_up``).

Other LyCORIS kinds (LoHa ``hada_*``, LoKr ``lokr_*``, full ``diff``, DoRA ``dora_scale``, OFT, norm
patches) raise :class:`LoraFormatError` naming the file and the kind: applying the rest of such a
file would give a wrong model silently. Keys that look like nothing we know, or that name a module the
model does not have, are returned in ``LoraPatches.unmatched`` for the caller to warn about; patches
that do not fit their weight's shape are listed in ``LoraPatches.problems`` and left out.

Original (LDM) names are resolved through the same name map (``names.py``) that writes checkpoints in the
original layout, built from the given UNet's config, so any UNet layout diffusers can build (SD1, SD2,
SDXL, tiny test models) gets both namings and the two uses cannot drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from atelier.engine.models.names import NameMap, clip_names, clip_root, unet_names
from atelier.engine.models.patches import WeightPatch, merge_patches

__all__ = [
    "LoraFormatError",
    "LoraPatches",
    "LoraTarget",
    "build_lora_patches",
    "load_lora",
    "lora_key_map",
    "read_lora_file",
    "unet_ldm_names",
]

LoraTarget = Literal["unet", "te1", "te2"]
TARGETS: Final[tuple[LoraTarget, ...]] = ("unet", "te1", "te2")

_PARTS: Final[dict[str, str]] = {
    "lora_up.weight": "up",
    "lora_down.weight": "down",
    "lora_mid.weight": "mid",
    "lora_B.weight": "up",
    "lora_A.weight": "down",
    "lora.up.weight": "up",
    "lora.down.weight": "down",
    "alpha": "alpha",
}

#: Leaf-name prefixes of LyCORIS kinds we do not apply, and how to name them in errors.
_UNSUPPORTED: Final[tuple[tuple[str, str], ...]] = (
    ("hada_", "LoHa (hada_*)"),
    ("lokr_", "LoKr (lokr_*)"),
    ("dora_scale", "DoRA (dora_scale)"),
    ("oft_", "OFT (oft_*)"),
    ("diff_b", "full bias difference (diff_b)"),
    ("diff", "full weight difference (diff)"),
    ("w_norm", "norm patch (w_norm)"),
    ("b_norm", "norm patch (b_norm)"),
    ("a1.weight", "GLoRA (a1/a2/b1/b2)"),
    ("b1.weight", "GLoRA (a1/a2/b1/b2)"),
)

_KOHYA_PREFIXES: Final[dict[str, LoraTarget]] = {
    "lora_unet_": "unet",
    "lora_te1_": "te1",
    "lora_te2_": "te2",
    "lora_te_": "te1",
}

_DOTTED_PREFIXES: Final[dict[str, str]] = {
    "unet.": "lora_unet_",
    "diffusion_model.": "lora_unet_",  # original (LDM) names, dotted: ComfyUI's generic LoRA form
    "text_encoder.": "lora_te1_",
    "text_encoder_2.": "lora_te2_",
}


class LoraFormatError(ValueError):
    """A LoRA file that cannot be read or holds a kind of patch we do not support."""


@dataclass(frozen=True, eq=False)
class LoraPatches:
    """Patches per target model, keyed by parameter name (``"<module>.weight"``), plus a report.

    ``unmatched``: LoRA module names (kohya form) that match no module of the given models, and keys
    of unknown layout. ``problems``: matched modules left out, with the reason (shape mismatch, a
    missing ``lora_up``/``lora_down``).
    """

    unet: Mapping[str, tuple[WeightPatch, ...]] = field(default_factory=dict)
    te1: Mapping[str, tuple[WeightPatch, ...]] = field(default_factory=dict)
    te2: Mapping[str, tuple[WeightPatch, ...]] = field(default_factory=dict)
    unmatched: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()

    def for_target(self, target: LoraTarget) -> Mapping[str, tuple[WeightPatch, ...]]:
        if target not in TARGETS:
            raise ValueError(f"unknown LoRA target {target!r}; expected one of {TARGETS}")
        return getattr(self, target)

    def merged(self, other: LoraPatches) -> LoraPatches:
        """Both LoRAs stacked: this one's patches then ``other``'s."""
        return LoraPatches(
            unet=merge_patches(self.unet, other.unet),
            te1=merge_patches(self.te1, other.te1),
            te2=merge_patches(self.te2, other.te2),
            unmatched=(*self.unmatched, *other.unmatched),
            problems=(*self.problems, *other.problems),
        )

    @property
    def count(self) -> int:
        """How many weights are patched, all targets together."""
        return len(self.unet) + len(self.te1) + len(self.te2)


def read_lora_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """All tensors of a ``.safetensors`` LoRA on the CPU; :class:`LoraFormatError` naming the file if it
    is missing or not a safetensors file."""
    name = os.fspath(path)
    if not os.path.isfile(name):
        raise LoraFormatError(f"{name}: no such LoRA file")
    try:
        return load_file(name, device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise LoraFormatError(f"{name}: not a readable safetensors file ({error})") from error


def _split_key(key: str) -> tuple[str, str] | None:
    """``("lora_unet_x", "up")`` for ``"lora_unet_x.lora_up.weight"``; None for other layouts."""
    for suffix, part in _PARTS.items():
        if key.endswith("." + suffix):
            return key[: -len(suffix) - 1], part
    return None


def _unsupported_kind(key: str) -> str | None:
    leaf = key.rsplit(".", 1)[-1] if not key.endswith(".weight") else key.rsplit(".", 2)[-2] + ".weight"
    for prefix, kind in _UNSUPPORTED:
        if leaf.startswith(prefix):
            return kind
    return None


def _kohya_name(base: str) -> str:
    """Any supported module-name form, normalised to kohya's underscore form."""
    for dotted, kohya in _DOTTED_PREFIXES.items():
        if base.startswith(dotted):
            return kohya + base[len(dotted) :].replace(".", "_")
    if base.startswith("lora_te_"):
        return "lora_te1_" + base[len("lora_te_") :]
    return base


def unet_ldm_names(unet: torch.nn.Module) -> dict[str, str]:
    """diffusers module name -> original (LDM/SGM) module name, for every module of a diffusers
    ``UNet2DConditionModel`` that has its own parameters, through the shared name map
    (:func:`~atelier.engine.models.names.unet_names`, the one the checkpoint writer uses). Empty for a
    UNet the map does not cover."""
    names = _unet_map(unet)
    if names is None:
        return {}
    owners = (name for name, module in unet.named_modules() if name and _has_own_parameters(module))
    return names.module_names(owners)


def _unet_map(unet: torch.nn.Module) -> NameMap | None:
    """The shared name map for this UNet's config; None when it has no diffusers config or a block
    layout the original layout does not have (its LoRAs can then only use diffusers names)."""
    config = getattr(unet, "config", None)
    if not isinstance(config, Mapping):
        return None
    try:
        return unet_names(config)
    except (KeyError, ValueError, TypeError):
        return None


def _has_own_parameters(module: torch.nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


def _kohya(prefix: str, module_name: str) -> str:
    return prefix + module_name.replace(".", "_")


def _patchable(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Linear | torch.nn.Conv2d | torch.nn.Conv1d)


def lora_key_map(
    unet: torch.nn.Module | None = None,
    te1: torch.nn.Module | None = None,
    te2: torch.nn.Module | None = None,
) -> dict[str, tuple[LoraTarget, str]]:
    """kohya module name (``lora_unet_...``, ``lora_te1_...``, ``lora_te2_...``) -> (target, parameter
    name) for every Linear/Conv module of the given models.

    UNet modules get two names: diffusers' own and the original one from the shared name map. Text
    encoders are named by kohya in the CLIP-L single-file naming (transformers' ``text_model.*``) whatever
    layout the checkpoint stores them in, so both go through the ``clip_l`` map."""
    table: dict[str, tuple[LoraTarget, str]] = {}
    if unet is not None:
        unet_map = _unet_map(unet)
        for name, module in unet.named_modules():
            if not (name and _patchable(module)):
                continue
            table[_kohya("lora_unet_", name)] = ("unet", f"{name}.weight")
            if unet_map is None:
                continue
            try:
                table[_kohya("lora_unet_", unet_map.to_original(name))] = ("unet", f"{name}.weight")
            except KeyError:
                continue  # a module the original layout does not have: diffusers' name only
    te_models: tuple[tuple[LoraTarget, torch.nn.Module | None], ...] = (("te1", te1), ("te2", te2))
    for target, model in te_models:
        if model is None:
            continue
        modules = [name for name, module in model.named_modules() if name and _patchable(module)]
        names = clip_names(
            "clip_l",
            0,
            root=clip_root(name for name, _ in model.named_parameters()),
            projection=hasattr(model, "text_projection"),
        )
        for name in modules:
            try:
                original = names.to_original(name)
            except KeyError:
                continue
            table[_kohya(f"lora_{target}_", original)] = (target, f"{name}.weight")
    return table


def build_lora_patches(
    state_dict: Mapping[str, torch.Tensor],
    *,
    unet: torch.nn.Module | None = None,
    te1: torch.nn.Module | None = None,
    te2: torch.nn.Module | None = None,
    strength_model: float = 1.0,
    strength_clip: float = 1.0,
    source: str = "LoRA",
) -> LoraPatches:
    """Patches from a LoRA state dict for the given models (a model left ``None`` is skipped, and so
    are its keys, silently; a strength of 0 skips its targets too). ``source`` names the file in errors."""
    unsupported: dict[str, list[str]] = {}
    groups: dict[str, dict[str, torch.Tensor]] = {}
    unknown: list[str] = []
    for key, tensor in state_dict.items():
        split = _split_key(key)
        if split is None:
            kind = _unsupported_kind(key)
            if kind is not None:
                unsupported.setdefault(kind, []).append(key)
            else:
                unknown.append(key)
            continue
        base, part = split
        groups.setdefault(_kohya_name(base), {})[part] = tensor
    if unsupported:
        kinds = "; ".join(f"{kind}: {len(keys)} keys, e.g. {keys[0]!r}" for kind, keys in unsupported.items())
        raise LoraFormatError(
            f"{source}: unsupported LoRA key types ({kinds}); only LoRA/LoCon "
            "(lora_up/lora_down/lora_mid/alpha) is supported"
        )
    if not groups:
        raise LoraFormatError(
            f"{source}: no LoRA weights found ({len(state_dict)} tensors, none lora_up/lora_down)"
        )

    models = {"unet": unet, "te1": te1, "te2": te2}
    strengths = {"unet": strength_model, "te1": strength_clip, "te2": strength_clip}
    table = lora_key_map(unet, te1, te2)
    out: dict[LoraTarget, dict[str, tuple[WeightPatch, ...]]] = {t: {} for t in TARGETS}
    unmatched: list[str] = list(unknown)
    problems: list[str] = []
    for name, parts in groups.items():
        target = next((t for p, t in _KOHYA_PREFIXES.items() if name.startswith(p)), None)
        if target is not None and models[target] is None:
            continue
        hit = table.get(name)
        if hit is None:
            unmatched.append(name)
            continue
        target, param_name = hit
        if strengths[target] == 0.0:
            continue
        if "up" not in parts or "down" not in parts:
            missing = "lora_up" if "up" not in parts else "lora_down"
            problems.append(f"{name}: no {missing} weight")
            continue
        alpha = parts.get("alpha")
        patch = WeightPatch(
            up=parts["up"],
            down=parts["down"],
            alpha=None if alpha is None else float(alpha.float().reshape(-1)[0]),
            strength=strengths[target],
            mid=parts.get("mid"),
        )
        model = models[target]
        assert model is not None
        problem = patch.check(model.get_parameter(param_name).shape)
        if problem is not None:
            problems.append(f"{name}: {problem}")
            continue
        out[target][param_name] = (*out[target].get(param_name, ()), patch)
    return LoraPatches(
        unet=out["unet"], te1=out["te1"], te2=out["te2"], unmatched=tuple(unmatched), problems=tuple(problems)
    )


def load_lora(
    path: str | os.PathLike[str],
    *,
    unet: torch.nn.Module | None = None,
    te1: torch.nn.Module | None = None,
    te2: torch.nn.Module | None = None,
    strength_model: float = 1.0,
    strength_clip: float = 1.0,
) -> LoraPatches:
    """Read a LoRA ``.safetensors`` file and map it onto the given models (see :func:`build_lora_patches`)."""
    return build_lora_patches(
        read_lora_file(path),
        unet=unet,
        te1=te1,
        te2=te2,
        strength_model=strength_model,
        strength_clip=strength_clip,
        source=os.fspath(path),
    )
