"""The noise stochastic samplers draw: ``noise_sampler(sigma, sigma_next) -> Tensor`` (unit variance,
shaped like ``x``), seeded as ComfyUI seeds it so that the same seed gives the same picture.

* :func:`default_noise_sampler`: independent gaussians from a ``torch.Generator`` on ``x``'s device. On
  the CPU it is seeded with ``seed + 1``, because the initial noise of a run is drawn from a CPU generator
  seeded with ``seed`` and an ancestral sampler's first draw would otherwise repeat it.
* :func:`brownian_tree_noise_sampler`: increments of one Brownian path W(sigma) over [sigma_min,
  sigma_max] (a ``torchsde.BrownianTree`` with the seed as its entropy), normalised by the interval's
  length. Any two calls over nested or adjacent intervals are consistent with the same path, so the
  SDE samplers (dpmpp_sde, dpmpp_2m_sde, dpmpp_3m_sde) converge as the step count grows and give the
  picture ComfyUI gives. The tree lives on the CPU (``cpu=True``, ComfyUI's default samplers) or on
  ``x``'s device (the ``_gpu`` samplers); the two give different numbers on a GPU.

Several jobs sampled as one batch (``batch.py``) pass a :class:`SeedBatch` as the seed: each job's rows of
``x`` then draw from a sampler of their own, seeded with that job's seed, so every job gets exactly the
noise stream it gets when it runs alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["NoiseSampler", "SeedBatch", "brownian_tree_noise_sampler", "default_noise_sampler"]

NoiseSampler = Callable[[float, float], Tensor]


@dataclass(frozen=True)
class SeedBatch:
    """The seeds of a batch of jobs: ``parts[i] = (seed, rows)``, job ``i`` owning the next ``rows`` rows
    of the batch. Noise samplers given one draw each job's rows from that job's own seed."""

    parts: tuple[tuple[int, int], ...]

    def split(self, x: Tensor) -> list[tuple[int, Tensor]]:
        """(seed, rows of ``x``) for each job."""
        if sum(rows for _, rows in self.parts) != x.shape[0]:
            raise ValueError(f"a seed batch of {self.parts} does not cover a batch of {x.shape[0]}")
        out, start = [], 0
        for seed, rows in self.parts:
            out.append((seed, x[start : start + rows]))
            start += rows
        return out


def _joined(samplers: list[NoiseSampler]) -> NoiseSampler:
    def sample(sigma: float, sigma_next: float) -> Tensor:
        return torch.cat([s(sigma, sigma_next) for s in samplers])

    return sample


def default_noise_sampler(x: Tensor, seed: int | SeedBatch | None = None) -> NoiseSampler:
    """Unit gaussian noise shaped like ``x`` from a generator on ``x.device``: seeded with ``seed``
    (0 when None), plus one on the CPU as ComfyUI does; a :class:`SeedBatch`: each job's rows its own."""
    if isinstance(seed, SeedBatch):
        return _joined([default_noise_sampler(part, s) for s, part in seed.split(x)])
    seed = 0 if seed is None else int(seed)
    if x.device.type == "cpu":
        seed += 1
    generator = torch.Generator(device=x.device)
    generator.manual_seed(seed & 0xFFFFFFFFFFFFFFFF)

    def sample(sigma: float, sigma_next: float) -> Tensor:
        return torch.randn(x.shape, dtype=x.dtype, layout=x.layout, device=x.device, generator=generator)

    return sample


def brownian_tree_noise_sampler(
    x: Tensor, sigma_min: float, sigma_max: float, seed: int | SeedBatch | None = None, *, cpu: bool = True
) -> NoiseSampler:
    """Normalised increments (W(sigma_next) - W(sigma)) / sqrt(|sigma_next - sigma|) of one Brownian path
    on [sigma_min, sigma_max], entropy ``seed`` (0 when None; a :class:`SeedBatch`: a tree per job). Times
    are float32, as ComfyUI passes them."""
    if isinstance(seed, SeedBatch):
        return _joined(
            [brownian_tree_noise_sampler(part, sigma_min, sigma_max, s, cpu=cpu) for s, part in seed.split(x)]
        )
    import torchsde  # imported on use: only the SDE samplers need it

    t0 = torch.tensor(float(sigma_min), dtype=torch.float32)
    t1 = torch.tensor(float(sigma_max), dtype=torch.float32)
    tree_sign = 1.0
    if not t0 < t1:
        t0, t1, tree_sign = t1, t0, -1.0
    w0 = torch.zeros_like(x)
    if cpu:
        w0 = w0.cpu()
    tree = torchsde.BrownianTree(t0, w0, t1, entropy=0 if seed is None else int(seed))

    def sample(sigma: float, sigma_next: float) -> Tensor:
        a = torch.tensor(float(sigma), dtype=torch.float32)
        b = torch.tensor(float(sigma_next), dtype=torch.float32)
        lo, hi, sign = (a, b, 1.0) if a < b else (b, a, -1.0)
        w = tree(lo, hi).to(device=x.device, dtype=torch.float32) * (tree_sign * sign)
        return (w / (b - a).abs().sqrt().to(x.device)).to(x.dtype)

    return sample
