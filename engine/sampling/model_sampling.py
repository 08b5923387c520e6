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

__all__ = ["ModelSampling", "Prediction", "make_betas", "rescale_zero_terminal_snr", "sigmas_from_betas"]

#: what the network predicts: the noise, v (Salimans & Ho), the data itself (x0), or a latent-consistency
#: model's consistency-parameterised noise ("lcm", which also thins the table to 50 levels)
Prediction = Literal["eps", "v_prediction", "lcm", "x0"]
PREDICTIONS: tuple[str, ...] = ("eps", "v_prediction", "lcm", "x0")
#: the alphas_cumprod a zero-terminal-SNR schedule puts at its last step instead of 0 (ComfyUI's value),
#: so that the last sigma stays finite (about 4519)
ZSNR_LAST_ALPHA_BAR = 4.8973451890853435e-08
#: an LCM is distilled onto 50 of the 1000 levels
LCM_ORIGINAL_STEPS = 50
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


def rescale_zero_terminal_snr(sigmas: Tensor) -> Tensor:
    """Lin et al. 2023 ("Common Diffusion Noise Schedules and Sample Steps are Flawed"), Algorithm 1, on a
    sigma table: sqrt(alphas_cumprod) is shifted so that the last step has zero signal and rescaled so
    that the first is unchanged. The last alphas_cumprod becomes a tiny positive value, not 0."""
    root = (1.0 / (sigmas.to(torch.float64) ** 2 + 1.0)).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * (first / (first - last))
    alpha_bar = root**2
    alpha_bar[-1] = ZSNR_LAST_ALPHA_BAR
    return ((1.0 - alpha_bar) / alpha_bar) ** 0.5


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
    #: training timesteps per table entry: 1, or 20 for an LCM's 50-entry table (entry i is timestep
    #: i * 20 + 19)
    skip_steps: int = 1
    #: the length of the training schedule the table was taken from (timesteps the UNet knows)
    train_timesteps: int = 1000
    _tables: dict[torch.device, Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {', '.join(PREDICTIONS)}, got {self.prediction!r}")
        if self.skip_steps < 1:
            raise ValueError(f"skip_steps must be at least 1, got {self.skip_steps}")
        given = self.sigmas.detach().to("cpu")
        sig = given.to(torch.float32).contiguous()
        if sig.ndim != 1 or sig.numel() < 2:
            raise ValueError("sigmas must be a 1-D table with at least 2 entries")
        if not bool((sig[1:] > sig[:-1]).all()):
            raise ValueError("sigmas must be strictly ascending")
        object.__setattr__(self, "sigmas", sig)
        # the log in the table's own precision (float64 for a computed schedule), as ComfyUI keeps it
        self._tables[torch.device("cpu")] = given.log().to(torch.float32)

    @classmethod
    def discrete(
        cls,
        prediction: Prediction = "eps",
        *,
        zsnr: bool = False,
        beta_schedule: BetaSchedule = "scaled_linear",
        linear_start: float = 0.00085,
        linear_end: float = 0.012,
        timesteps: int = 1000,
    ) -> ModelSampling:
        """The SD1/SD2/SDXL schedule (defaults) for a network predicting ``prediction``, optionally
        rescaled to zero terminal SNR (``zsnr``), as ComfyUI's ModelSamplingDiscrete node builds it.
        "lcm" keeps every 20th level (50 of 1000, the highest one included)."""
        betas = make_betas(beta_schedule, timesteps, linear_start, linear_end)
        table = sigmas_from_betas(betas)
        if zsnr:
            table = rescale_zero_terminal_snr(table)
        if prediction != "lcm":
            return cls(sigmas=table, prediction=prediction, train_timesteps=timesteps)
        skip = timesteps // LCM_ORIGINAL_STEPS
        picked = table.float()[timesteps - 1 - skip * torch.arange(LCM_ORIGINAL_STEPS - 1, -1, -1)]
        return cls(sigmas=picked, prediction="lcm", skip_steps=skip, train_timesteps=timesteps)

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
        """The training timestep of the table entry nearest to ``sigma`` in log space (what ComfyUI
        feeds the UNet); for an LCM table, entry i is timestep i * skip_steps + skip_steps - 1."""
        s = sigma if isinstance(sigma, Tensor) else torch.tensor(float(sigma), dtype=torch.float32)
        table = self._log_table(s.device)
        dist = (s.to(torch.float32).log().reshape(1, -1) - table[:, None]).abs()
        index = dist.argmin(dim=0).reshape(s.shape)
        if self.skip_steps == 1:
            return index
        return index * self.skip_steps + (self.skip_steps - 1)

    def sigma(self, t: Tensor | float) -> Tensor:
        """Sigma at a (possibly fractional) training timestep: the table interpolated in log space."""
        tt = t if isinstance(t, Tensor) else torch.tensor(float(t), dtype=torch.float32)
        table = self._log_table(tt.device)
        tt = tt.to(torch.float32)
        if self.skip_steps != 1:
            tt = (tt - (self.skip_steps - 1)) / self.skip_steps
        tt = tt.clamp(0, table.shape[0] - 1)
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
        t = (1.0 - percent) * (self.train_timesteps - 1)
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
        if self.prediction == "x0":
            return model_output
        if self.prediction == "lcm":
            return self._lcm_denoised(sigma, model_output, model_input)
        sd = self.sigma_data
        return model_input * sd**2 / (s**2 + sd**2) - model_output * s * sd / (s**2 + sd**2) ** 0.5

    def _lcm_denoised(self, sigma: Tensor | float, model_output: Tensor, model_input: Tensor) -> Tensor:
        """Latent-consistency boundary conditions (Luo et al. 2023): c_skip * x + c_out * x0_eps with
        sigma_data 0.5 and the timestep scaled by 10."""
        sig = sigma if isinstance(sigma, Tensor) else torch.tensor([float(sigma)])
        sig = sig.reshape(-1).to(model_output.device)
        shape = sig.shape[:1] + (1,) * (model_output.ndim - 1)
        t = self.timestep_discrete(sig).reshape(shape).to(model_output.dtype) * 10.0
        s = sig.reshape(shape).to(model_output.dtype)
        x0 = model_input - model_output * s
        c_skip = 0.25 / (t**2 + 0.25)
        c_out = t / (t**2 + 0.25) ** 0.5
        return c_out * x0 + c_skip * model_input

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
