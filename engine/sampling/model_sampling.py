"""The discrete noise schedule of Stable Diffusion (the original LDM code) in k-diffusion form.

A data point ``x0`` noised to level ``sigma`` is ``x = x0 + sigma * eps`` (the "variance exploding"
view). The network was trained on the "variance preserving" view ``alpha * x0 + sqrt(1 - alpha^2) * eps``
with ``alpha^2 = alphas_cumprod[t]``; both are the same thing scaled by ``sqrt(1 + sigma^2)``, with
``sigma = sqrt((1 - alphas_cumprod) / alphas_cumprod)``.

Conventions follow ComfyUI (``noise_scaling``, ``percent_to_sigma``, ``sigma(t)``) so that schedules
computed here are the same numbers ComfyUI computes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

__all__ = ["ModelSampling", "Prediction", "make_betas", "sigmas_from_betas"]

Prediction = Literal["eps", "v_prediction"]
BetaSchedule = Literal["scaled_linear", "linear"]


def make_betas(
    schedule: BetaSchedule = "scaled_linear",
    timesteps: int = 1000,
    linear_start: float = 0.00085,
    linear_end: float = 0.012,
) -> Tensor:
    """Betas in float64.

    ``scaled_linear`` is what the LDM code calls "linear": evenly spaced in sqrt(beta), then squared.
    ``linear`` is evenly spaced in beta.
    """
    if timesteps < 2:
        raise ValueError(f"timesteps must be at least 2, got {timesteps}")
    if schedule == "scaled_linear":
        return torch.linspace(linear_start**0.5, linear_end**0.5, timesteps, dtype=torch.float64) ** 2
    if schedule == "linear":
        return torch.linspace(linear_start, linear_end, timesteps, dtype=torch.float64)
    raise ValueError(f"unknown beta schedule {schedule!r}; expected 'scaled_linear' or 'linear'")


def sigmas_from_betas(betas: Tensor) -> Tensor:
    """sigma_t = sqrt((1 - acp_t) / acp_t) with acp the cumulative product of (1 - beta), in float64."""
    alphas_cumprod = torch.cumprod(1.0 - betas.to(torch.float64), dim=0)
    return ((1.0 - alphas_cumprod) / alphas_cumprod) ** 0.5


def _reshape_sigma(sigma: Tensor | float, like: Tensor) -> Tensor | float:
    """A sigma that broadcasts against ``like``: a scalar stays a scalar, a batch becomes [B, 1, ...]."""
    if not isinstance(sigma, Tensor):
        return float(sigma)
    if sigma.numel() == 1:
        return sigma.reshape(()).to(like.device)
    return sigma.reshape(sigma.shape[:1] + (1,) * (like.ndim - 1)).to(like.device)


@dataclass(frozen=True, eq=False)
class ModelSampling:
    """A discrete (1000-step) noise schedule and how a network's output maps to a denoised latent.

    ``sigmas`` is the model's sigma table, CPU float32, ascending (index = training timestep).
    Build the usual one with :meth:`ModelSampling.discrete`.
    """

    sigmas: Tensor
    prediction: Prediction = "eps"
    sigma_data: float = 1.0
    _tables: dict[torch.device, Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.prediction not in ("eps", "v_prediction"):
            raise ValueError(f"prediction must be 'eps' or 'v_prediction', got {self.prediction!r}")
        sig = self.sigmas.detach().to("cpu", torch.float32).contiguous()
        if sig.ndim != 1 or sig.numel() < 2:
            raise ValueError("sigmas must be a 1-D table with at least 2 entries")
        if not bool((sig[1:] > sig[:-1]).all()):
            raise ValueError("sigmas must be strictly ascending")
        object.__setattr__(self, "sigmas", sig)
        self._tables[torch.device("cpu")] = sig.log()

    @classmethod
    def discrete(
        cls,
        prediction: Prediction = "eps",
        *,
        beta_schedule: BetaSchedule = "scaled_linear",
        linear_start: float = 0.00085,
        linear_end: float = 0.012,
        timesteps: int = 1000,
    ) -> ModelSampling:
        """The SD1/SD2/SDXL schedule (defaults), eps or v-prediction."""
        betas = make_betas(beta_schedule, timesteps, linear_start, linear_end)
        return cls(sigmas=sigmas_from_betas(betas).float(), prediction=prediction)

    # ----------------------------------------------------------------- the table
    @property
    def log_sigmas(self) -> Tensor:
        return self._tables[torch.device("cpu")]

    @property
    def num_timesteps(self) -> int:
        return int(self.sigmas.shape[0])

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    @property
    def alphas_cumprod(self) -> Tensor:
        return 1.0 / (1.0 + self.sigmas.double() ** 2)

    def _log_table(self, device: torch.device) -> Tensor:
        """log(sigmas) on ``device``, copied there once (no host round trip per call afterwards)."""
        table = self._tables.get(device)
        if table is None:
            table = self._tables[torch.device("cpu")].to(device)
            self._tables[device] = table
        return table

    # ------------------------------------------------------------ sigma <-> t
    def timestep(self, sigma: Tensor | float) -> Tensor:
        """Continuous timestep for ``sigma``: linear interpolation of the index in log-sigma.

        Computed on ``sigma``'s device; clamped to [0, num_timesteps - 1].
        """
        s = sigma if isinstance(sigma, Tensor) else torch.tensor(float(sigma), dtype=torch.float32)
        table = self._log_table(s.device)
        log_s = s.to(torch.float32).log()
        n = table.shape[0]
        # index of the last table entry <= log_s, kept inside [0, n - 2] so that hi = lo + 1 exists
        lo = (torch.searchsorted(table, log_s.reshape(-1).contiguous(), right=True) - 1).clamp(0, n - 2)
        lo_v, hi_v = table[lo], table[lo + 1]
        w = ((log_s.reshape(-1) - lo_v) / (hi_v - lo_v)).clamp(0.0, 1.0)
        return (lo.to(torch.float32) + w).reshape(s.shape)

    def timestep_discrete(self, sigma: Tensor | float) -> Tensor:
        """Index of the table entry nearest to ``sigma`` in log space (what ComfyUI feeds the UNet)."""
        s = sigma if isinstance(sigma, Tensor) else torch.tensor(float(sigma), dtype=torch.float32)
        table = self._log_table(s.device)
        dist = (s.to(torch.float32).log().reshape(1, -1) - table[:, None]).abs()
        return dist.argmin(dim=0).reshape(s.shape)

    def sigma(self, t: Tensor | float) -> Tensor:
        """Sigma at a (possibly fractional) timestep: the table interpolated in log space."""
        tt = t if isinstance(t, Tensor) else torch.tensor(float(t), dtype=torch.float32)
        table = self._log_table(tt.device)
        tt = tt.to(torch.float32).clamp(0, table.shape[0] - 1)
        lo = tt.floor().long()
        hi = tt.ceil().long()
        w = tt.frac()
        return ((1 - w) * table[lo] + w * table[hi]).exp()

    def percent_to_sigma(self, percent: float) -> float:
        """Sigma at ``percent`` of the way through sampling (0 = start = very large, 1 = end = 0)."""
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        t = (1.0 - percent) * (self.num_timesteps - 1)
        return float(self.sigma(torch.tensor(t, dtype=torch.float32)))

    # -------------------------------------------------- network input / output
    def calculate_input(self, sigma: Tensor | float, x: Tensor) -> Tensor:
        """The network's input: x / sqrt(sigma^2 + sigma_data^2)."""
        s = _reshape_sigma(sigma, x)
        return x / (s**2 + self.sigma_data**2) ** 0.5

    def calculate_denoised(self, sigma: Tensor | float, model_output: Tensor, model_input: Tensor) -> Tensor:
        """The denoised latent (x0) from the network's raw output; ``model_input`` is the noisy x."""
        s = _reshape_sigma(sigma, model_output)
        if self.prediction == "eps":
            return model_input - model_output * s
        sd = self.sigma_data
        return model_input * sd**2 / (s**2 + sd**2) - model_output * s * sd / (s**2 + sd**2) ** 0.5

    def noise_scaling(
        self, sigma: Tensor | float, noise: Tensor, latent_image: Tensor, max_denoise: bool = False
    ) -> Tensor:
        """The starting point of sampling: latent + sigma * noise (sqrt(1 + sigma^2) with max_denoise)."""
        s = _reshape_sigma(sigma, noise)
        if isinstance(s, Tensor):
            scale: Tensor | float = torch.sqrt(1.0 + s**2) if max_denoise else s
        else:
            scale = math.sqrt(1.0 + s * s) if max_denoise else s
        return noise * scale + latent_image

    def inverse_noise_scaling(self, sigma: Tensor | float, latent: Tensor) -> Tensor:
        """The sampler's output back to a latent: the identity for eps and v models."""
        return latent
