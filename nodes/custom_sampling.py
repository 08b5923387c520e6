"""Custom sampling: KSampler taken apart into a sampler, a sigma schedule, noise and a guider.

ComfyUI's node family of the same names, inputs and outputs. The pieces are small values
(SAMPLER, SIGMAS, NOISE, GUIDER; see ``engine/sampling/custom.py``) that SamplerCustom and
SamplerCustomAdvanced put together and run through KSampler's own step loop: with KSampler's settings
(a sampler that keeps the penultimate sigma) they give KSampler's latent bit for bit.
"""

from __future__ import annotations

from typing import Any

import torch

from atelier.engine import types as T
from atelier.engine.models.handles import ModelHandle
from atelier.engine.models.sockets import CONDITIONING, GUIDER, LATENT, MODEL, NOISE, SAMPLER, SIGMAS
from atelier.engine.node import Boolean, Choice, Context, Float, Int, Node, Output, Socket, String
from atelier.engine.sampling.conditioning import Conditioning
from atelier.engine.sampling.custom import (
    BasicGuide,
    CFGGuide,
    DualCFGGuide,
    Guider,
    Noise,
    Sampler,
    SeededNoise,
    ZeroNoise,
)
from atelier.engine.sampling.runner import run_custom_sampler
from atelier.engine.sampling.samplers import SAMPLER_NAMES, SAMPLERS
from atelier.engine.sampling.schedulers import (
    SCHEDULER_NAMES,
    beta_scheduler,
    exponential_sigmas,
    karras_sigmas,
)
from atelier.engine.sampling.sigmas import (
    basic_scheduler_sigmas,
    flip_sigmas,
    laplace_sigmas,
    parse_sigmas,
    polyexponential_sigmas,
    sd_turbo_sigmas,
    split_sigmas,
    split_sigmas_denoise,
    vp_sigmas,
)

NOISE_SEED = Int("noise_seed", 0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True)
CFG = Float("cfg", 8.0, min=0.0, max=100.0, step=0.1)
STEPS = Int("steps", 20, min=1, max=10000)
SIGMA_MAX = Float("sigma_max", 14.614642, min=0.0, max=5000.0, step=0.01)
SIGMA_MIN = Float("sigma_min", 0.0291675, min=0.0, max=5000.0, step=0.01)
ETA = Float("eta", 1.0, min=0.0, max=100.0, step=0.01)
S_NOISE = Float("s_noise", 1.0, min=0.0, max=100.0, step=0.01)
NOISE_DEVICE = Choice("noise_device", ["gpu", "cpu"])


def _sampler_for_device(name: str, noise_device: str) -> str:
    """ComfyUI's ``<name>_gpu`` variant (Brownian noise drawn on the GPU) when it exists here."""
    gpu = f"{name}_gpu"
    return gpu if noise_device == "gpu" and gpu in SAMPLERS else name


# -- samplers ----------------------------------------------------------------------------------------


class KSamplerSelect(Node):
    """Pick a sampler by name (KSampler's list) for SamplerCustom."""

    display_name = "KSamplerSelect"
    category = "sampling/samplers"
    inputs = (Choice("sampler_name", SAMPLER_NAMES),)
    outputs = (Output(SAMPLER),)

    def run(self, ctx: Context, sampler_name: str) -> Sampler:
        return Sampler(sampler_name)


class SamplerEulerAncestral(Node):
    """Euler ancestral with its noise amount (eta) and noise scale."""

    display_name = "SamplerEulerAncestral"
    category = "sampling/samplers"
    inputs = (ETA, S_NOISE)
    outputs = (Output(SAMPLER),)

    def run(self, ctx: Context, eta: float, s_noise: float) -> Sampler:
        return Sampler("euler_ancestral", {"eta": eta, "s_noise": s_noise})


class SamplerDPMPP_2S_Ancestral(Node):
    """DPM-Solver++(2S) ancestral with its noise amount (eta) and noise scale."""

    display_name = "SamplerDPMPP_2S_Ancestral"
    category = "sampling/samplers"
    inputs = (ETA, S_NOISE)
    outputs = (Output(SAMPLER),)

    def run(self, ctx: Context, eta: float, s_noise: float) -> Sampler:
        return Sampler("dpmpp_2s_ancestral", {"eta": eta, "s_noise": s_noise})


class SamplerDPMPP_2M_SDE(Node):
    """DPM-Solver++(2M) SDE with its solver type, noise amount (eta) and noise scale."""

    display_name = "SamplerDPMPP_2M_SDE"
    category = "sampling/samplers"
    inputs = (Choice("solver_type", ["midpoint", "heun"]), ETA, S_NOISE, NOISE_DEVICE)
    outputs = (Output(SAMPLER),)

    def run(self, ctx: Context, solver_type: str, eta: float, s_noise: float, noise_device: str) -> Sampler:
        name = _sampler_for_device("dpmpp_2m_sde", noise_device)
        return Sampler(name, {"eta": eta, "s_noise": s_noise, "solver_type": solver_type})


class SamplerDPMPP_SDE(Node):
    """DPM-Solver++ SDE with its noise amount (eta), noise scale and intermediate step ratio r."""

    display_name = "SamplerDPMPP_SDE"
    category = "sampling/samplers"
    inputs = (ETA, S_NOISE, Float("r", 0.5, min=0.0, max=100.0, step=0.01), NOISE_DEVICE)
    outputs = (Output(SAMPLER),)

    def run(self, ctx: Context, eta: float, s_noise: float, r: float, noise_device: str) -> Sampler:
        name = _sampler_for_device("dpmpp_sde", noise_device)
        return Sampler(name, {"eta": eta, "s_noise": s_noise, "r": r})


class SamplerLMS(Node):
    """Linear multistep with its order."""

    display_name = "SamplerLMS"
    category = "sampling/samplers"
    inputs = (Int("order", 4, min=1, max=100),)
    outputs = (Output(SAMPLER),)

    def run(self, ctx: Context, order: int) -> Sampler:
        return Sampler("lms", {"order": order})


# -- schedulers --------------------------------------------------------------------------------------


class BasicScheduler(Node):
    """A model's sigma schedule by scheduler name (KSampler's list), steps and denoise."""

    display_name = "BasicScheduler"
    category = "sampling/schedulers"
    inputs = (
        Socket("model", MODEL),
        Choice("scheduler", SCHEDULER_NAMES),
        STEPS,
        Float("denoise", 1.0, min=0.0, max=1.0, step=0.01),
    )
    outputs = (Output(SIGMAS),)

    def run(
        self, ctx: Context, model: ModelHandle, scheduler: str, steps: int, denoise: float
    ) -> torch.Tensor:
        return basic_scheduler_sigmas(model.sampling, scheduler, steps, denoise)


class KarrasScheduler(Node):
    """Karras et al.'s schedule: sigma^(1/rho) evenly spaced from sigma_max to sigma_min, then 0."""

    display_name = "KarrasScheduler"
    category = "sampling/schedulers"
    inputs = (STEPS, SIGMA_MAX, SIGMA_MIN, Float("rho", 7.0, min=0.0, max=100.0, step=0.01))
    outputs = (Output(SIGMAS),)

    def run(self, ctx: Context, steps: int, sigma_max: float, sigma_min: float, rho: float) -> torch.Tensor:
        return karras_sigmas(steps, sigma_min, sigma_max, rho)


class ExponentialScheduler(Node):
    """log(sigma) evenly spaced from sigma_max to sigma_min, then 0."""

    display_name = "ExponentialScheduler"
    category = "sampling/schedulers"
    inputs = (STEPS, SIGMA_MAX, SIGMA_MIN)
    outputs = (Output(SIGMAS),)

    def run(self, ctx: Context, steps: int, sigma_max: float, sigma_min: float) -> torch.Tensor:
        return exponential_sigmas(steps, sigma_min, sigma_max)


class PolyexponentialScheduler(Node):
    """log(sigma) from sigma_max to sigma_min along a polynomial ramp of power rho, then 0."""

    display_name = "PolyexponentialScheduler"
    category = "sampling/schedulers"
    inputs = (STEPS, SIGMA_MAX, SIGMA_MIN, Float("rho", 1.0, min=0.0, max=100.0, step=0.01))
    outputs = (Output(SIGMAS),)

    def run(self, ctx: Context, steps: int, sigma_max: float, sigma_min: float, rho: float) -> torch.Tensor:
        return polyexponential_sigmas(steps, sigma_min, sigma_max, rho)


class VPScheduler(Node):
    """The variance-preserving SDE's schedule (beta_d, beta_min, eps_s), then 0."""

    display_name = "VPScheduler"
    category = "sampling/schedulers"
    inputs = (
        STEPS,
        Float("beta_d", 19.9, min=0.0, max=5000.0, step=0.01),
        Float("beta_min", 0.1, min=0.0, max=5000.0, step=0.01),
        Float("eps_s", 0.001, min=0.0, max=1.0, step=0.0001),
    )
    outputs = (Output(SIGMAS),)

    def run(self, ctx: Context, steps: int, beta_d: float, beta_min: float, eps_s: float) -> torch.Tensor:
        return vp_sigmas(steps, beta_d, beta_min, eps_s)


class LaplaceScheduler(Node):
    """Sigmas at evenly spaced quantiles of a Laplace(mu, beta) distribution of log(sigma), clamped to
    [sigma_min, sigma_max] (no final 0, as ComfyUI's)."""

    display_name = "LaplaceScheduler"
    category = "sampling/schedulers"
    inputs = (
        STEPS,
        SIGMA_MAX,
        SIGMA_MIN,
        Float("mu", 0.0, min=-10.0, max=10.0, step=0.1),
        Float("beta", 0.5, min=0.0, max=10.0, step=0.1),
    )
    outputs = (Output(SIGMAS),)

    def run(
        self, ctx: Context, steps: int, sigma_max: float, sigma_min: float, mu: float, beta: float
    ) -> torch.Tensor:
        return laplace_sigmas(steps, sigma_min, sigma_max, mu, beta)


class ManualSigmas(Node):
    """Sigmas typed in: the numbers of the text, in order ("14.6, 7, 2, 0")."""

    display_name = "ManualSigmas"
    category = "sampling/sigmas"
    inputs = (String("sigmas", "1, 0.5"),)
    outputs = (Output(SIGMAS),)

    def run(self, ctx: Context, sigmas: str) -> torch.Tensor:
        return parse_sigmas(sigmas)


class SamplingPercentToSigma(Node):
    """The model's sigma at a share of the way through sampling (0 = start, 1 = end). Without
    ``return_actual_sigma``, 0 and 1 give the values used for interval checks (a huge sigma and 0)."""

    display_name = "SamplingPercentToSigma"
    category = "sampling/sigmas"
    inputs = (
        Socket("model", MODEL),
        Float("sampling_percent", 0.0, min=0.0, max=1.0, step=0.0001),
        Boolean("return_actual_sigma", False),
    )
    outputs = (Output(T.FLOAT, "sigma_value"),)

    def run(
        self, ctx: Context, model: ModelHandle, sampling_percent: float, return_actual_sigma: bool
    ) -> float:
        ms = model.sampling
        if return_actual_sigma and sampling_percent == 0.0:
            return ms.sigma_max
        if return_actual_sigma and sampling_percent == 1.0:
            return ms.sigma_min
        return float(ms.percent_to_sigma(sampling_percent))


class BetaSamplingScheduler(Node):
    """A model's timesteps at the quantiles of a Beta(alpha, beta) distribution."""

    display_name = "BetaSamplingScheduler"
    category = "sampling/schedulers"
    inputs = (
        Socket("model", MODEL),
        STEPS,
        Float("alpha", 0.6, min=0.0, max=50.0, step=0.01),
        Float("beta", 0.6, min=0.0, max=50.0, step=0.01),
    )
    outputs = (Output(SIGMAS),)

    def run(self, ctx: Context, model: ModelHandle, steps: int, alpha: float, beta: float) -> torch.Tensor:
        return beta_scheduler(model.sampling, steps, alpha=alpha, beta=beta)


class SDTurboScheduler(Node):
    """SD-Turbo's few-step schedule (timesteps 999, 899, ...) for a model."""

    display_name = "SDTurboScheduler"
    category = "sampling/schedulers"
    inputs = (
        Socket("model", MODEL),
        Int("steps", 1, min=1, max=10),
        Float("denoise", 1.0, min=0.0, max=1.0, step=0.01),
    )
    outputs = (Output(SIGMAS),)

    def run(self, ctx: Context, model: ModelHandle, steps: int, denoise: float) -> torch.Tensor:
        return sd_turbo_sigmas(model.sampling, steps, denoise)


# -- sigmas ------------------------------------------------------------------------------------------


class SplitSigmas(Node):
    """Split a schedule at a step: high_sigmas up to it, low_sigmas from it (both hold that sigma)."""

    display_name = "SplitSigmas"
    category = "sampling/sigmas"
    inputs = (Socket("sigmas", SIGMAS), Int("step", 0, min=0, max=10000))
    outputs = (Output(SIGMAS, "high_sigmas"), Output(SIGMAS, "low_sigmas"))

    def run(self, ctx: Context, sigmas: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return split_sigmas(sigmas, step)


class SplitSigmasDenoise(Node):
    """Split a schedule so that low_sigmas holds the last ``denoise`` share of its steps."""

    display_name = "SplitSigmasDenoise"
    category = "sampling/sigmas"
    inputs = (Socket("sigmas", SIGMAS), Float("denoise", 1.0, min=0.0, max=1.0, step=0.01))
    outputs = (Output(SIGMAS, "high_sigmas"), Output(SIGMAS, "low_sigmas"))

    def run(self, ctx: Context, sigmas: torch.Tensor, denoise: float) -> tuple[torch.Tensor, torch.Tensor]:
        return split_sigmas_denoise(sigmas, denoise)


class FlipSigmas(Node):
    """Reverse a schedule (low to high, for unsampling); a leading 0 becomes 0.0001."""

    display_name = "FlipSigmas"
    category = "sampling/sigmas"
    inputs = (Socket("sigmas", SIGMAS),)
    outputs = (Output(SIGMAS),)

    def run(self, ctx: Context, sigmas: torch.Tensor) -> torch.Tensor:
        return flip_sigmas(sigmas)


class SetFirstSigma(Node):
    """Replace a schedule's first sigma."""

    display_name = "SetFirstSigma"
    category = "sampling/sigmas"
    inputs = (Socket("sigmas", SIGMAS), Float("sigma", 136.0, min=0.0, max=20000.0, step=0.001))
    outputs = (Output(SIGMAS),)

    def run(self, ctx: Context, sigmas: torch.Tensor, sigma: float) -> torch.Tensor:
        if len(sigmas) == 0:
            raise ValueError("sigmas is empty: there is no first sigma to set")
        out = sigmas.clone()
        out[0] = sigma
        return out


# -- noise -------------------------------------------------------------------------------------------


class RandomNoise(Node):
    """Gaussian noise from a seed, drawn as KSampler draws it."""

    display_name = "RandomNoise"
    category = "sampling/noise"
    inputs = (NOISE_SEED,)
    outputs = (Output(NOISE),)

    def run(self, ctx: Context, noise_seed: int) -> Noise:
        return SeededNoise(noise_seed)


class DisableNoise(Node):
    """No initial noise: sampling starts from the latent as it is."""

    display_name = "DisableNoise"
    category = "sampling/noise"
    outputs = (Output(NOISE),)

    def run(self, ctx: Context) -> Noise:
        return ZeroNoise()


class AddNoise(Node):
    """Add noise to a latent at the size a schedule spans (its first minus its last sigma), without
    sampling."""

    display_name = "AddNoise"
    category = "sampling/custom_sampling/noise"
    inputs = (
        Socket("model", MODEL),
        Socket("noise", NOISE),
        Socket("sigmas", SIGMAS),
        Socket("latent_image", LATENT),
    )
    outputs = (Output(LATENT),)

    def run(
        self,
        ctx: Context,
        model: ModelHandle,
        noise: Noise,
        sigmas: torch.Tensor,
        latent_image: dict[str, Any],
    ) -> dict[str, Any]:
        if len(sigmas) == 0:
            return latent_image
        samples = latent_image["samples"]
        scale = float((sigmas[0] - sigmas[-1]).abs()) if len(sigmas) > 1 else float(sigmas[0])
        drawn = noise.generate(latent_image).to(samples.device)
        start = model.process_in(samples.float()) if bool(samples.any()) else samples.float()  # 0 stays 0
        noisy = model.process_out(model.sampling.noise_scaling(scale, drawn, start))
        out = dict(latent_image)
        out["samples"] = torch.nan_to_num(noisy, nan=0.0, posinf=0.0, neginf=0.0)
        return out


# -- guiders -----------------------------------------------------------------------------------------


class BasicGuider(Node):
    """Guide a model by one conditioning, without classifier-free guidance."""

    display_name = "Basic Guider"
    category = "sampling/guiders"
    inputs = (Socket("model", MODEL), Socket("conditioning", CONDITIONING))
    outputs = (Output(GUIDER),)

    def run(self, ctx: Context, model: ModelHandle, conditioning: Conditioning) -> Guider:
        return BasicGuide(model, conditioning)


class CFGGuider(Node):
    """Guide a model by positive and negative conditioning with classifier-free guidance (as KSampler)."""

    display_name = "CFG Guider"
    category = "sampling/guiders"
    inputs = (
        Socket("model", MODEL),
        Socket("positive", CONDITIONING),
        Socket("negative", CONDITIONING),
        CFG,
    )
    outputs = (Output(GUIDER),)

    def run(
        self, ctx: Context, model: ModelHandle, positive: Conditioning, negative: Conditioning, cfg: float
    ) -> Guider:
        return CFGGuide(model, positive, negative, cfg)


class DualCFGGuider(Node):
    """Guide by two prompts and a negative: cfg_conds weighs cond1 against cond2, cfg_cond2_negative
    cond2 against the negative ("nested" applies the first inside the second)."""

    display_name = "Dual CFG Guider"
    category = "sampling/guiders"
    inputs = (
        Socket("model", MODEL),
        Socket("cond1", CONDITIONING),
        Socket("cond2", CONDITIONING),
        Socket("negative", CONDITIONING),
        Float("cfg_conds", 8.0, min=0.0, max=100.0, step=0.1),
        Float("cfg_cond2_negative", 8.0, min=0.0, max=100.0, step=0.1),
        Choice("style", ["regular", "nested"]),
    )
    outputs = (Output(GUIDER),)

    def run(
        self,
        ctx: Context,
        model: ModelHandle,
        cond1: Conditioning,
        cond2: Conditioning,
        negative: Conditioning,
        cfg_conds: float,
        cfg_cond2_negative: float,
        style: str,
    ) -> Guider:
        return DualCFGGuide(model, cond1, cond2, negative, cfg_conds, cfg_cond2_negative, style == "nested")


# -- sampling ----------------------------------------------------------------------------------------

SAMPLED = (Output(LATENT, "output"), Output(LATENT, "denoised_output"))


class SamplerCustom(Node):
    """Denoise a latent with a chosen sampler along given sigmas, guided by CFG. Returns the result and
    the last step's denoised prediction."""

    display_name = "SamplerCustom"
    category = "sampling/custom_sampling"
    inputs = (
        Socket("model", MODEL),
        Boolean("add_noise", True),
        NOISE_SEED,
        CFG,
        Socket("positive", CONDITIONING),
        Socket("negative", CONDITIONING),
        Socket("sampler", SAMPLER),
        Socket("sigmas", SIGMAS),
        Socket("latent_image", LATENT),
    )
    outputs = SAMPLED

    def run(
        self,
        ctx: Context,
        model: ModelHandle,
        add_noise: bool,
        noise_seed: int,
        cfg: float,
        positive: Conditioning,
        negative: Conditioning,
        sampler: Sampler,
        sigmas: torch.Tensor,
        latent_image: dict[str, Any],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        noise: Noise = SeededNoise(noise_seed) if add_noise else ZeroNoise(noise_seed)
        guider = CFGGuide(model, positive, negative, cfg)
        return run_custom_sampler(ctx, guider, sampler, sigmas, noise, latent_image)


class SamplerCustomAdvanced(Node):
    """Denoise a latent from its pieces: noise, guider, sampler and sigmas. Returns the result and the
    last step's denoised prediction."""

    display_name = "SamplerCustomAdvanced"
    category = "sampling/custom_sampling"
    inputs = (
        Socket("noise", NOISE),
        Socket("guider", GUIDER),
        Socket("sampler", SAMPLER),
        Socket("sigmas", SIGMAS),
        Socket("latent_image", LATENT),
    )
    outputs = SAMPLED

    def run(
        self,
        ctx: Context,
        noise: Noise,
        guider: Guider,
        sampler: Sampler,
        sigmas: torch.Tensor,
        latent_image: dict[str, Any],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        return run_custom_sampler(ctx, guider, sampler, sigmas, noise, latent_image)
