"""Several jobs' sampler runs as one batch (cross-job batching, ``engine/batching.py``).

Jobs that sample with the same MODEL handle (same checkpoint, LoRA set and patches), latent size, sampler,
scheduler, steps and denoise run one step loop over their latents concatenated. Each job keeps what makes
its picture its own:

* its initial noise, drawn from its own seed in its own latent's shape (:func:`~.ksampler.prepare_noise`);
* the noise of stochastic samplers (ancestral, SDE): a :class:`~.noise.SeedBatch` makes every job's rows
  draw from a generator (or Brownian tree) seeded with that job's seed, the stream it has alone;
* its prompt and negative: each step is one network forward over every job's cond and uncond rows;
* its cfg (per-sample guidance scale).

The arithmetic around the network is the same, element by element, as a job's own run (the weighting of
conditioning entries, the cfg combination, the sampler's update), so a batched job's picture differs from its
lone picture only by what the network's batched kernels do differently (nothing on most CPU kernels; a last
bit here and there on others). Only plain runs batch (:func:`batch_key` says None otherwise): no noise mask,
conditioning entries without area, mask, control hints, image prompts or inpainting images, a model without
call wrappers, and a sampler whose steps do not depend on the whole batch (not ``dpm_adaptive``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .conditioning import CondEntry, Conditioning
from .guidance import CfgArgs, ModelCall, SamplingInputs
from .ksampler import StepCallback, effective_sigmas, prepare_noise, sample_sigmas
from .noise import SeedBatch

if TYPE_CHECKING:
    from atelier.engine.models.handles import ModelHandle
    from atelier.engine.node import Context

#: samplers whose step sizes depend on the whole batch (an error norm over it): they never batch
UNBATCHABLE_SAMPLERS: frozenset[str] = frozenset({"dpm_adaptive"})


@dataclass(frozen=True)
class SamplerJob:
    """One job's part of a batch: its LATENT dict, seed, cfg and conditioning."""

    latent: dict[str, Any]
    seed: int
    cfg: float
    positive: Conditioning
    negative: Conditioning


@dataclass(frozen=True)
class SamplerSettings:
    """What the jobs of one batch share besides the model: the settings of the sampler's step loop
    (KSampler gives the first four; KSamplerAdvanced its noise switch and step range instead of denoise)."""

    steps: int
    sampler_name: str
    scheduler: str
    denoise: float = 1.0
    add_noise: bool = True
    start_step: int | None = None
    last_step: int | None = None
    force_full_denoise: bool = False

    def sigmas(self, model: ModelHandle) -> Tensor:
        """The sigmas the batch walks (:func:`~.ksampler.effective_sigmas`)."""
        return effective_sigmas(
            model,
            self.scheduler,
            self.sampler_name,
            self.steps,
            self.denoise,
            self.start_step,
            self.last_step,
            self.force_full_denoise,
        )

    def key(self) -> tuple[Any, ...]:
        """The settings as a batch key's part: equal for runs that walk the same steps."""
        return (
            self.sampler_name,
            self.scheduler,
            int(self.steps),
            float(self.denoise),
            bool(self.add_noise),
            self.start_step,
            self.last_step,
            bool(self.force_full_denoise),
        )


def _plain(cond: Conditioning) -> bool:
    return all(
        isinstance(e, CondEntry)
        and e.area is None
        and e.mask is None
        and not e.control
        and not e.image_prompts
        and e.concat is None
        and not e.extra
        for e in cond
    )


def _rows_ok(t: Tensor | None, rows: int) -> bool:
    return t is None or t.shape[0] in (1, rows)


def batch_key(model: ModelHandle, job: SamplerJob, settings: SamplerSettings) -> Hashable | None:
    """What must be equal for sampler runs to share a batch, or None when this run cannot batch."""
    samples = job.latent.get("samples") if isinstance(job.latent, dict) else None
    if not isinstance(samples, Tensor) or samples.dim() != 4 or settings.sampler_name in UNBATCHABLE_SAMPLERS:
        return None
    if job.latent.get("noise_mask") is not None or model.wrappers or model.core_wrappers:
        return None
    guided = float(job.cfg) != 1.0
    if not job.positive or (guided and not job.negative):
        return None  # runs alone, where the error is told
    if not _plain(job.positive) or not _plain(job.negative):
        return None
    rows = samples.shape[0]
    entries = [*job.positive, *job.negative]
    if not all(_rows_ok(e.embedding, rows) and _rows_ok(e.pooled, rows) for e in entries):
        return None
    # the prompt's token length as its own run pads it: jobs whose prompts pad differently run apart
    length = math.lcm(*(e.embedding.shape[1] for e in entries))
    return (
        id(model),
        tuple(samples.shape),
        samples.dtype,
        samples.device,
        *settings.key(),
        guided,
        length,
        float(job.cfg) if model.cfg_functions else None,  # CFG functions may read cfg as one number
    )


class BatchCFGDenoiser:
    """``denoiser(x, sigma) -> x0`` over several jobs' rows: one network forward for every job's positive
    (and, when guided, negative) entries, then each job's weighted predictions and its own cfg."""

    def __init__(
        self, model: ModelHandle, jobs: Sequence[SamplerJob], rows: Sequence[int], inputs: SamplingInputs
    ) -> None:
        self.model = model
        self.jobs = list(jobs)
        self.rows = list(rows)
        self.inputs = inputs
        self.guided = float(jobs[0].cfg) != 1.0
        cfgs = [float(j.cfg) for j in jobs]
        if len(set(cfgs)) == 1:
            self.cfg: float | Tensor = cfgs[0]
        else:
            per_row = [c for c, r in zip(cfgs, rows, strict=True) for _ in range(r)]
            self.cfg = torch.tensor(per_row, dtype=torch.float32).reshape(-1, 1, 1, 1)

    def __call__(
        self, x: Tensor, sigma: Tensor, *, post_cfg: Sequence[Callable[[CfgArgs], Tensor]] = (), **_: Any
    ) -> Tensor:
        guided = self.guided or bool(post_cfg)
        cond, uncond = self._predict(x, sigma, guided)
        if not guided:
            return cond
        cfg = self.cfg if isinstance(self.cfg, float) else self.cfg.to(x.device)
        denoised = uncond + (cond - uncond) * cfg
        for fn in (*self.model.cfg_functions, *post_cfg):
            denoised = fn(CfgArgs(cond, uncond, cfg, x, sigma, denoised))  # type: ignore[arg-type]
        return denoised

    def _predict(self, x: Tensor, sigma: Tensor, guided: bool) -> tuple[Tensor, Tensor]:
        model = self.model
        ms = model.sampling
        _, _, h, w = x.shape
        x_in = ms.calculate_input(sigma, x)
        t = model.timestep(sigma).to(x.device)
        # one chunk per (job, entry), in the order each job's own run batches them: positives, negatives
        chunks: list[tuple[int, CondEntry, bool]] = []
        for j, job in enumerate(self.jobs):
            chunks += [(j, e, False) for e in job.positive]
            if guided:
                chunks += [(j, e, True) for e in job.negative]
        starts = [sum(self.rows[:j]) for j in range(len(self.jobs))]

        def part(j: int, tensor: Tensor) -> Tensor:
            return tensor[starts[j] : starts[j] + self.rows[j]]

        length = math.lcm(*(e.embedding.shape[1] for _, e, _ in chunks))
        xs, ts, sigmas, contexts, pooled, time_ids = [], [], [], [], [], []
        for j, e, negative in chunks:
            b = self.rows[j]
            xs.append(part(j, x_in))
            ts.append(part(j, t))
            sigmas.append(part(j, sigma))
            c = e.embedding.to(x.device)
            if c.shape[1] != length:
                c = c.repeat(1, length // c.shape[1], 1)
            contexts.append(c.expand(b, -1, -1) if c.shape[0] == 1 else c)
            if model.needs_pooled:
                if e.pooled is None:
                    raise ValueError("this model (SDXL) needs a pooled text embedding: encode with its CLIP")
                p = e.pooled.to(x.device)
                pooled.append(p.expand(b, -1) if p.shape[0] == 1 else p)
                ids = torch.tensor(model.size_ids(e, h, w, negative), device=x.device)
                time_ids.append(ids.expand(b, -1))
        added = {"text_embeds": torch.cat(pooled), "time_ids": torch.cat(time_ids)} if pooled else None
        sig = torch.cat(sigmas)
        call = ModelCall(
            x=torch.cat(xs),
            timestep=torch.cat(ts),
            context=torch.cat(contexts),
            added=added,
            sigma=sig,
            entries=tuple(e for _, e, _ in chunks),
            negative=tuple(n for _, _, n in chunks),
            batch=self.rows[0],
            area=(h, w, 0, 0),
            sampling=self.inputs,
        )
        out = model.apply_model(call)
        x_raw = torch.cat([part(j, x) for j, _, _ in chunks])
        denoised = ms.calculate_denoised(sig, out.float(), x_raw)
        # each job's weighted average of its entries, with the same operations as its own run
        sums = [torch.zeros_like(x), torch.zeros_like(x)]
        weights = [torch.full_like(x[:, :1], 1e-37), torch.full_like(x[:, :1], 1e-37)]
        at = 0
        for j, e, negative in chunks:
            b = self.rows[j]
            d = denoised[at : at + b]
            at += b
            wgt = torch.full_like(d[:, :1], float(e.strength))
            slot = int(negative)
            lo, hi = starts[j], starts[j] + b
            sums[slot][lo:hi] += d * wgt
            weights[slot][lo:hi] += wgt
        return sums[0] / weights[0], sums[1] / weights[1]


def sample_batch(
    model: ModelHandle,
    jobs: Sequence[SamplerJob],
    settings: SamplerSettings,
    *,
    device: str | torch.device = "cpu",
    callbacks: Sequence[StepCallback | None] = (),
) -> list[Tensor]:
    """Denoise every job's latent (model space, ``job.latent["samples"]``) in one step loop; returns each
    job's float32 latent on ``device``. ``callbacks[i]`` gets job ``i``'s rows after every step."""
    sigmas = settings.sigmas(model)
    latents = [j.latent["samples"].to(device, torch.float32) for j in jobs]
    if len(sigmas) < 2:
        return latents
    rows = [lat.shape[0] for lat in latents]
    noises = [
        prepare_noise(j.latent["samples"], j.seed, j.latent.get("batch_index"))
        if settings.add_noise
        else torch.zeros(j.latent["samples"].shape)
        for j in jobs
    ]
    latent = torch.cat(latents)
    starts = [sum(rows[:n]) for n in range(len(rows))]

    def on_step(step: int, total: int, x: Tensor, denoised: Tensor) -> None:
        for n, callback in enumerate(callbacks):
            if callback is not None:
                lo, hi = starts[n], starts[n] + rows[n]
                callback(step, total, x[lo:hi], denoised[lo:hi])

    out = sample_sigmas(
        model,
        latent,
        torch.cat(noises).to(device),
        sigmas,
        lambda inputs: BatchCFGDenoiser(model, jobs, rows, inputs),
        settings.sampler_name,
        seed=SeedBatch(tuple((int(j.seed), r) for j, r in zip(jobs, rows, strict=True))),  # type: ignore[arg-type]
        device=device,
        callback=on_step,
    )
    return [out[lo : lo + r] for lo, r in zip(starts, rows, strict=True)]


def run_sampler_batch(
    ctxs: Sequence[Context], model: ModelHandle, jobs: Sequence[SamplerJob], settings: SamplerSettings
) -> list[dict[str, Any]]:
    """A sampling node's ``run_batch``: each job's LATENT result (as :func:`~.runner.run_sampler` gives it
    alone), with progress and previews through each job's own context."""
    from .runner import step_reporter

    callbacks = [step_reporter(ctx, model.family) for ctx in ctxs]
    in_model = [
        SamplerJob(
            {**j.latent, "samples": model.process_in(j.latent["samples"].to(torch.float32))},
            j.seed,
            j.cfg,
            j.positive,
            j.negative,
        )
        for j in jobs
    ]
    if len(settings.sigmas(model)) < 2:  # nothing to walk: every latent passes through untouched, as alone
        return [dict(j.latent) for j in jobs]
    with model.session():
        outs = sample_batch(model, in_model, settings, device=model.device, callbacks=callbacks)
    results = []
    for job, out in zip(jobs, outs, strict=True):
        result = dict(job.latent)
        result["samples"] = model.process_out(out)
        results.append(result)
    return results
