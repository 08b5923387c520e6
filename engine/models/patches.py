"""Weight patches (LoRA / LoCon deltas, model merges) and applying them to a module for the length of a block.

A :class:`WeightPatch` describes ``delta = up @ down * alpha / rank * strength`` for one weight tensor; a
:class:`MergePatch` blends in another model's weight (``W * self_scale + W_other * other_scale``, ComfyUI's
model merging), reading that weight by reference only when applied. :func:`patched` applies a patch set to
a module's weights in place and puts the exact original tensors back afterwards, so that the same base
model can serve a branch with a LoRA or a merge and one without it, in any order, and end every block
bitwise unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch

__all__ = [
    "MergePatch",
    "Patch",
    "PatchSet",
    "WeightPatch",
    "apply_patches",
    "merge_patches",
    "patched",
    "restore_weights",
    "scale_patches",
]


@dataclass(frozen=True, eq=False)
class WeightPatch:
    """``delta = up @ down * (alpha / rank) * strength``, reshaped to the patched weight.

    - Linear: ``up [out, r]``, ``down [r, in]``.
    - Conv (LoCon): ``up [out, r, 1, 1]``, ``down [r, in, kh, kw]``; the product of the flattened
      factors is ``[out, in * kh * kw]``, which is the kernel of "down conv, then 1x1 up conv".
    - With ``mid`` (LyCORIS LoCon with Tucker/CP decomposition): ``down [r, in, 1, 1]``,
      ``mid [r', r, kh, kw]``, ``up [out, r', 1, 1]`` and
      ``delta[o, i, h, w] = sum_ab up[o, a] * mid[a, b, h, w] * down[b, i]``.

    ``rank`` is ``down.shape[0]``; ``alpha=None`` means ``alpha = rank`` (scale 1). Factors keep the
    dtype and device they were loaded with; :meth:`delta` computes in float32 on the target device.
    """

    up: torch.Tensor
    down: torch.Tensor
    alpha: float | None = None
    strength: float = 1.0
    mid: torch.Tensor | None = None

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        """``alpha / rank * strength``."""
        alpha = float(self.rank) if self.alpha is None else self.alpha
        return alpha / self.rank * self.strength

    def out_numel(self) -> int:
        """How many elements the delta has (must equal the patched weight's)."""
        out = int(self.up.shape[0])
        if self.mid is None:
            return out * int(self.down[0].numel())
        return out * int(self.down.shape[1]) * int(self.mid[0, 0].numel())

    def check(self, shape: Sequence[int]) -> str | None:
        """Why this patch cannot apply to a weight of ``shape``, or ``None`` when it can."""
        up_rank = int(self.up[0].numel())
        if self.mid is None:
            if up_rank != self.rank:
                return f"lora_up rank {up_rank} != lora_down rank {self.rank}"
        elif self.mid.ndim != 4 or int(self.mid.shape[0]) != up_rank or int(self.mid.shape[1]) != self.rank:
            return f"lora_mid {tuple(self.mid.shape)} does not fit lora_up rank {up_rank} / lora_down rank {self.rank}"
        if int(self.up.shape[0]) != int(shape[0]) or self.out_numel() != math.prod(shape):
            return f"patch of up {tuple(self.up.shape)} / down {tuple(self.down.shape)} does not fit weight {tuple(shape)}"
        return None

    def delta(
        self,
        shape: Sequence[int],
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """The weight difference, computed in float32 on ``device``, returned as ``dtype`` in ``shape``."""
        problem = self.check(shape)
        if problem is not None:
            raise ValueError(problem)
        f32 = torch.float32
        up = self.up.to(device=device, dtype=f32).flatten(1)
        down = self.down.to(device=device, dtype=f32).flatten(1)
        if self.mid is None:
            delta = up @ down
        else:
            mid = self.mid.to(device=device, dtype=f32)
            delta = torch.einsum("oa,abhw,bi->oihw", up, mid, down)
        return (delta * self.scale).reshape(tuple(shape)).to(dtype)

    def scaled(self, factor: float) -> WeightPatch:
        """The same patch with ``strength`` multiplied by ``factor``."""
        return replace(self, strength=self.strength * factor)

    def apply_to(self, total: torch.Tensor) -> torch.Tensor:
        """``total`` (float32, the weight so far) with this patch's delta added."""
        return total + self.delta(total.shape, torch.float32, total.device)


@dataclass(frozen=True, eq=False)
class MergePatch:
    """``W * self_scale + W_other * other_scale``: another model's weight blended in (model merging).

    ``other`` is the other model's parameter itself (no copy: it is read when the patch is applied), and
    ``other_patches`` are the patches that model carries for it (a LoRA on the second model of a merge),
    applied to ``other`` first. ``strength`` scales the change this patch makes to the weight."""

    other: torch.Tensor
    self_scale: float
    other_scale: float
    other_patches: tuple[Patch, ...] = ()
    strength: float = 1.0

    def check(self, shape: Sequence[int]) -> str | None:
        if tuple(self.other.shape) != tuple(shape):
            return f"merged weight {tuple(self.other.shape)} does not fit weight {tuple(shape)}"
        return None

    def scaled(self, factor: float) -> MergePatch:
        return replace(self, strength=self.strength * factor)

    def other_weight(self, device: torch.device | str | None = None) -> torch.Tensor:
        """The other model's weight with its own patches, in float32 on ``device``."""
        weight = self.other.detach().to(device=device, dtype=torch.float32, copy=True)
        for patch in self.other_patches:
            weight = patch.apply_to(weight)
        return weight

    def apply_to(self, total: torch.Tensor) -> torch.Tensor:
        merged = total * self.self_scale + self.other_weight(total.device) * self.other_scale
        if self.strength == 1.0:
            return merged
        return total + (merged - total) * self.strength


#: One patch of a weight: a low-rank delta or a merge.
Patch = WeightPatch | MergePatch

#: Parameter name (``"down_blocks.0.attentions.0.proj_in.weight"``) -> patches to apply, in order.
PatchSet = Mapping[str, Sequence[Patch]]


def merge_patches(a: PatchSet, b: PatchSet, *more: PatchSet) -> dict[str, tuple[Patch, ...]]:
    """Combine patch sets (stacked LoRAs): per parameter, the patches of ``a`` then ``b`` then ..."""
    out: dict[str, tuple[Patch, ...]] = {}
    for patch_set in (a, b, *more):
        for name, patches in patch_set.items():
            out[name] = (*out.get(name, ()), *patches)
    return out


def scale_patches(patches: PatchSet, factor: float) -> dict[str, tuple[Patch, ...]]:
    """Every patch with its strength multiplied by ``factor``."""
    return {name: tuple(p.scaled(factor) for p in ps) for name, ps in patches.items()}


def _parameter(module: torch.nn.Module, name: str) -> torch.nn.Parameter:
    try:
        return module.get_parameter(name)
    except AttributeError as error:
        raise KeyError(f"{type(module).__name__} has no parameter {name!r} to patch") from error


def apply_patches(module: torch.nn.Module, patches: PatchSet) -> dict[str, torch.Tensor]:
    """Add the patches to ``module``'s weights in place; return backups of the original tensors.

    Each patched weight becomes ``(W.float() + sum of deltas).to(W.dtype)`` (a merge patch blends instead,
    in its place in the order). Every name is checked
    before anything is touched; if a patch fails halfway, the weights already changed are restored
    before the error propagates. Give the returned backups to :func:`restore_weights`.
    """
    params = {name: _parameter(module, name) for name, ps in patches.items() if ps}
    for name, param in params.items():
        for patch in patches[name]:
            problem = patch.check(param.shape)
            if problem is not None:
                raise ValueError(f"cannot patch {name!r}: {problem}")
    backups: dict[str, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for name, param in params.items():
                total = param.detach().to(torch.float32, copy=True)
                for patch in patches[name]:
                    total = patch.apply_to(total)
                backups[name] = param.detach().clone()
                param.copy_(total)
    except BaseException:
        restore_weights(module, backups)
        raise
    return backups


def restore_weights(module: torch.nn.Module, backups: Mapping[str, torch.Tensor]) -> None:
    """Copy backed-up tensors back into ``module``'s parameters (bitwise)."""
    with torch.no_grad():
        for name, original in backups.items():
            module.get_parameter(name).copy_(original)


@contextmanager
def patched(module: torch.nn.Module, patches: PatchSet) -> Iterator[torch.nn.Module]:
    """Within the block, ``module`` carries the patched weights; afterwards the originals, bit for bit.

    Only the patched tensors are backed up (a copy on their own device). Blocks nest: an inner block
    patches on top of the outer one and restores the outer state when it ends. The module is changed
    in place, so two threads must not patch the same module at once.
    """
    backups = apply_patches(module, patches)
    try:
        yield module
    finally:
        restore_weights(module, backups)
