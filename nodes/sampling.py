"""KSampler and KSamplerAdvanced: denoise latents with a model, guided by conditioning."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from atelier.engine import folders as _F
from atelier.engine.limits import Estimate, Extent
from atelier.engine.models import estimates as X
from atelier.engine.models.handles import ModelHandle
from atelier.engine.models.sockets import CONDITIONING, LATENT, MODEL
from atelier.engine.node import Choice, Context, Float, Int, Node, Output, Socket
from atelier.engine.sampling import batch as B
from atelier.engine.sampling.conditioning import Conditioning
from atelier.engine.sampling.ksampler import denoise_problem
from atelier.engine.sampling.runner import SAMPLER_SETTINGS, SEED, run_sampler


class _BatchedSampler(Node, abstract=True):
    """Cross-job batching of a sampler node: jobs that reach it with the same model, latent size and
    settings sample as one batch, each with its own seed, prompts and cfg (engine/sampling/batch.py).
    Subclasses say how their inputs make a job and its shared settings."""

    @staticmethod
    def _batch_parts(inputs: Mapping[str, Any]) -> tuple[B.SamplerJob, B.SamplerSettings]:
        raise NotImplementedError

    def batch_key(self, **inputs: Any) -> Hashable | None:
        job, settings = self._batch_parts(inputs)
        return B.batch_key(inputs["model"], job, settings)

    def run_batch(self, ctxs: Sequence[Context], inputs: Sequence[dict[str, Any]]) -> list[Any]:
        parts = [self._batch_parts(i) for i in inputs]
        return B.run_sampler_batch(ctxs, inputs[0]["model"], [p[0] for p in parts], parts[0][1])


class KSampler(_BatchedSampler):
    """Denoise a latent: the sampler's step loop, guided by positive and negative conditioning."""

    display_name = "KSampler"
    category = "sampling"
    inputs = (
        Socket("model", MODEL),
        SEED,
        *SAMPLER_SETTINGS,
        Socket("positive", CONDITIONING),
        Socket("negative", CONDITIONING),
        Socket("latent_image", LATENT),
        Float("denoise", 1.0, min=0.0, max=1.0, step=0.01),
    )
    outputs = (Output(LATENT),)
    batch_free = ("seed", "cfg")

    @classmethod
    def check_inputs(cls, files: _F.Folders, **literals: Any) -> list[tuple[str | None, str]]:
        steps, denoise = literals.get("steps"), literals.get("denoise")
        if isinstance(steps, int) and isinstance(denoise, float):
            problem = denoise_problem(steps, denoise)
            if problem is not None:
                return [("denoise", problem)]
        return []

    @classmethod
    def estimate(
        cls, files: _F.Folders, upstream: Mapping[str, Extent], steps: int | None = None, **_: Any
    ) -> Estimate | None:
        latent = upstream.get("latent_image")
        return Estimate(
            X.steps_measures(steps),
            {0: latent} if latent is not None else {},
            work_bytes=X.sampler_work(latent),
        )

    def run(
        self,
        ctx: Context,
        model: ModelHandle,
        seed: int,
        steps: int,
        cfg: float,
        sampler_name: str,
        scheduler: str,
        positive: Conditioning,
        negative: Conditioning,
        latent_image: dict,
        denoise: float,
    ) -> dict:
        return run_sampler(
            ctx,
            model,
            latent_image,
            positive,
            negative,
            seed=seed,
            steps=steps,
            cfg=cfg,
            sampler_name=sampler_name,
            scheduler=scheduler,
            denoise=denoise,
        )

    @staticmethod
    def _batch_parts(inputs: Mapping[str, Any]) -> tuple[B.SamplerJob, B.SamplerSettings]:
        job = B.SamplerJob(
            inputs["latent_image"], inputs["seed"], inputs["cfg"], inputs["positive"], inputs["negative"]
        )
        settings = B.SamplerSettings(
            inputs["steps"], inputs["sampler_name"], inputs["scheduler"], denoise=inputs["denoise"]
        )
        return job, settings


class KSamplerAdvanced(_BatchedSampler):
    """KSampler with control over noise and the range of steps (for multi-stage sampling)."""

    display_name = "KSampler (Advanced)"
    category = "sampling"
    inputs = (
        Socket("model", MODEL),
        Choice("add_noise", ["enable", "disable"]),
        Int("noise_seed", 0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True),
        *SAMPLER_SETTINGS,
        Socket("positive", CONDITIONING),
        Socket("negative", CONDITIONING),
        Socket("latent_image", LATENT),
        Int("start_at_step", 0, min=0, max=10000),
        Int("end_at_step", 10000, min=0, max=10000),
        Choice("return_with_leftover_noise", ["disable", "enable"]),
    )
    outputs = (Output(LATENT),)
    batch_free = ("noise_seed", "cfg")

    @classmethod
    def estimate(
        cls, files: _F.Folders, upstream: Mapping[str, Extent], steps: int | None = None, **_: Any
    ) -> Estimate | None:
        latent = upstream.get("latent_image")
        return Estimate(
            X.steps_measures(steps),
            {0: latent} if latent is not None else {},
            work_bytes=X.sampler_work(latent),
        )

    def run(
        self,
        ctx: Context,
        model: ModelHandle,
        add_noise: str,
        noise_seed: int,
        steps: int,
        cfg: float,
        sampler_name: str,
        scheduler: str,
        positive: Conditioning,
        negative: Conditioning,
        latent_image: dict,
        start_at_step: int,
        end_at_step: int,
        return_with_leftover_noise: str,
    ) -> dict:
        return run_sampler(
            ctx,
            model,
            latent_image,
            positive,
            negative,
            seed=noise_seed,
            steps=steps,
            cfg=cfg,
            sampler_name=sampler_name,
            scheduler=scheduler,
            add_noise=add_noise == "enable",
            start_step=start_at_step,
            last_step=end_at_step,
            force_full_denoise=return_with_leftover_noise != "enable",
        )

    @staticmethod
    def _batch_parts(inputs: Mapping[str, Any]) -> tuple[B.SamplerJob, B.SamplerSettings]:
        job = B.SamplerJob(
            inputs["latent_image"],
            inputs["noise_seed"],
            inputs["cfg"],
            inputs["positive"],
            inputs["negative"],
        )
        settings = B.SamplerSettings(
            inputs["steps"],
            inputs["sampler_name"],
            inputs["scheduler"],
            add_noise=inputs["add_noise"] == "enable",
            start_step=inputs["start_at_step"],
            last_step=inputs["end_at_step"],
            force_full_denoise=inputs["return_with_leftover_noise"] != "enable",
        )
        return job, settings
