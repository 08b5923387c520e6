"""Cross-job batching on the tiny SD1.5 checkpoint: jobs that reach a KSampler with the same model, size,
sampler and steps sample as one batch, and each job's latent is the one it gets alone.

Tolerances: the batched network forward is the only thing that differs from a lone run. CPU kernels are not
batch-invariant (a UNet row computed in a batch of 6 differs from the same row in a batch of 2 in the last
bits, ~1e-6 relative), so through the sampler the latents agree to 1e-5 relative. With a network that is
batch-invariant by construction (row by row), every sampler below is bit-exact: seeds, per-job noise streams
(ancestral, Brownian tree), per-sample cfg and the conditioning weights are exactly the lone run's.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from atelier.engine import cli
from atelier.engine import events as E
from atelier.engine.executor import JobSpec
from atelier.engine.models.handles import ModelHandle
from atelier.engine.node import CancelToken
from atelier.engine.sampling.batch import SamplerJob, SamplerSettings, batch_key
from atelier.engine.sampling.noise import SeedBatch, brownian_tree_noise_sampler, default_noise_sampler

ROOT = Path(__file__).resolve().parents[2]


def job_workflow(
    sid: str,
    seed: int,
    text: str,
    cfg: float,
    *,
    sampler: str = "euler",
    steps: int = 3,
    size: int = 64,
    neg_clip: str = "ckpt",
) -> dict:
    """txt2img whose sampler node is called ``sid`` (node ids are not in signatures: probes tell jobs apart)."""
    return {
        "format": "atelier/workflow",
        "version": 1,
        "nodes": {
            "ckpt": {"type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny15.safetensors"}},
            "xl": {"type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tinyxl.safetensors"}},
            "lat": {"type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
            "pos": {
                "type": "CLIPTextEncode",
                "inputs": {"clip": {"node": "ckpt", "output": "CLIP"}, "text": text},
            },
            "neg": {
                "type": "CLIPTextEncode",
                "inputs": {"clip": {"node": neg_clip, "output": "CLIP"}, "text": "blurry"},
            },
            sid: {
                "type": "KSampler",
                "inputs": {
                    "model": {"node": "ckpt", "output": "MODEL"},
                    "seed": seed,
                    "steps": steps,
                    "cfg": cfg,
                    "sampler_name": sampler,
                    "scheduler": "normal",
                    "positive": {"node": "pos", "output": 0},
                    "negative": {"node": "neg", "output": 0},
                    "latent_image": {"node": "lat", "output": 0},
                    "denoise": 1.0,
                },
            },
            "out": {"type": "PreviewImage", "inputs": {"images": {"node": "dec", "output": 0}}},
            "dec": {
                "type": "VAEDecode",
                "inputs": {"samples": {"node": sid, "output": 0}, "vae": {"node": "ckpt", "output": "VAE"}},
            },
        },
    }


JOBS = [("ks0", 1, "a face", 7.0), ("ks1", 2, "a cat smiling at the camera", 4.5), ("ks2", 3, "red", 7.0)]


@pytest.fixture()
def probe(engine_env):
    """Latents of every KSampler that ran (by node id) and the number of network forwards."""
    latents: dict[str, torch.Tensor] = {}
    engine_env.observers.append(
        lambda nid, t, outs: latents.__setitem__(nid, outs[0]["samples"].clone()) if t == "KSampler" else None
    )
    return latents


@pytest.fixture()
def forwards(monkeypatch):
    calls: list[int] = []
    original = ModelHandle._forward

    def counted(self, call):
        calls.append(call.x.shape[0])
        return original(self, call)

    monkeypatch.setattr(ModelHandle, "_forward", counted)
    return calls


def alone_and_batched(ex, probe, jobs, **kw) -> tuple[dict, dict, list]:
    alone = {}
    for sid, seed, text, cfg in jobs:
        ex.cache.clear()
        res = ex.run(job_workflow(sid, seed, text, cfg, **kw))
        assert res.ok, res.failure
        alone[sid] = probe[sid]
    ex.cache.clear()
    probe.clear()
    events: dict[str, list[E.Event]] = {sid: [] for sid, *_ in jobs}
    specs = [
        JobSpec(job_workflow(sid, seed, text, cfg, **kw), job_id=sid, on_event=events[sid].append)
        for sid, seed, text, cfg in jobs
    ]
    results = ex.run_many(specs)
    assert all(r.ok for r in results), [r.failure for r in results]
    return alone, dict(probe), events


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m_cfg_pp"])
def test_batched_jobs_match_their_lone_runs_in_one_forward_per_step(
    engine_env, probe, forwards, sampler: str
) -> None:
    alone, batched, events = alone_and_batched(engine_env, probe, JOBS, sampler=sampler)
    lone_calls = len(forwards) - 3  # before the batch: three lone runs of 3 steps
    assert forwards[-3:] == [6, 6, 6] and lone_calls == 9  # cond + uncond of three jobs, one forward a step
    scale = max(float(a.abs().max()) for a in alone.values())
    for sid, *_ in JOBS:
        assert batched[sid].shape == alone[sid].shape == (1, 4, 8, 8)
        torch.testing.assert_close(batched[sid], alone[sid], rtol=0, atol=1e-5 * scale)
    # live: each job's own seed and prompt give its own picture
    assert float((alone["ks0"] - alone["ks2"]).abs().max()) > 0.1 * scale
    for sid, evs in events.items():  # every job hears about its own sampler, and only its own
        progress = [(e.value, e.max) for e in evs if isinstance(e, E.Progress)]
        assert progress == [(1, 3), (2, 3), (3, 3)]
        assert all(e.job == sid for e in evs)
        assert isinstance(evs[-1], E.JobFinished)
        assert sid in [e.node for e in evs if isinstance(e, E.NodeFinished)]


@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpmpp_2m_sde"])
def test_bit_exact_with_a_batch_invariant_network(engine_env, probe, monkeypatch, sampler: str) -> None:
    """Row by row the network is batch-invariant: then everything around it (initial noise from each
    job's seed, the sampler's own noise stream per job, per-sample cfg) is exactly the lone run's."""
    original = ModelHandle._forward

    def row_by_row(self, call):
        rows = [
            original(
                self,
                call.replace(
                    x=call.x[i : i + 1],
                    timestep=call.timestep[i : i + 1],
                    context=call.context[i : i + 1],
                    sigma=call.sigma[i : i + 1],
                ),
            )
            for i in range(call.x.shape[0])
        ]
        return torch.cat(rows)

    monkeypatch.setattr(ModelHandle, "_forward", row_by_row)
    alone, batched, _ = alone_and_batched(engine_env, probe, JOBS, sampler=sampler)
    for sid, *_ in JOBS:
        assert torch.equal(batched[sid], alone[sid]), sid


def test_seed_batch_noise_is_each_jobs_own_stream() -> None:
    x = torch.zeros(3, 4, 8, 8)
    seeds = SeedBatch(((7, 1), (8, 2)))
    both = default_noise_sampler(x, seeds)
    one, two = default_noise_sampler(x[:1], 7), default_noise_sampler(x[1:], 8)
    for _ in range(2):
        assert torch.equal(both(1.0, 0.5), torch.cat([one(1.0, 0.5), two(1.0, 0.5)]))
    tree = brownian_tree_noise_sampler(x, 0.1, 10.0, seeds)
    t1, t2 = (
        brownian_tree_noise_sampler(x[:1], 0.1, 10.0, 7),
        brownian_tree_noise_sampler(x[1:], 0.1, 10.0, 8),
    )
    assert torch.equal(tree(5.0, 2.0), torch.cat([t1(5.0, 2.0), t2(5.0, 2.0)]))
    with pytest.raises(ValueError, match="does not cover"):
        default_noise_sampler(torch.zeros(2, 4, 8, 8), seeds)


def test_incompatible_jobs_are_not_batched(engine_env, probe, forwards) -> None:
    jobs = [
        job_workflow("a", 1, "x", 7.0),
        job_workflow("b", 2, "y", 5.0),  # batches with a
        job_workflow("c", 3, "x", 7.0, steps=4),
        job_workflow("d", 4, "x", 7.0, size=48),
        job_workflow("e", 5, "x", 7.0, sampler="euler_ancestral"),
        job_workflow("f", 6, "x", 1.0),  # cfg 1 needs no negative: not with the guided ones
    ]
    results = engine_env.run_many([JobSpec(w) for w in jobs])
    assert all(r.ok for r in results)
    assert sorted(forwards) == sorted([4] * 3 + [2] * 4 + [2] * 3 + [2] * 3 + [1] * 3)
    assert probe["d"].shape == (1, 4, 6, 6)


def test_batch_keys_tell_models_and_plain_conditioning_apart(engine_env) -> None:
    handles: dict[str, ModelHandle] = {}
    conds: dict[str, list] = {}
    engine_env.observers.append(
        lambda nid, t, outs: (
            handles.__setitem__(nid, outs[0])
            if t == "CheckpointLoaderSimple"
            else conds.__setitem__(nid, outs[0])
            if t == "CLIPTextEncode"
            else None
        )
    )
    assert engine_env.run(job_workflow("s", 1, "x", 7.0)).ok
    m, pos, neg = handles["ckpt"], conds["pos"], conds["neg"]
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    settings = SamplerSettings(steps=3, sampler_name="euler", scheduler="normal")
    key = batch_key(m, SamplerJob(latent, 1, 7.0, pos, neg), settings)
    assert key is not None
    assert batch_key(m, SamplerJob(latent, 99, 3.0, neg, pos), settings) == key  # seed, cfg, prompts free
    other_model = dataclasses.replace(m)  # another MODEL (a LoRA applied, say): its own batches
    assert batch_key(other_model, SamplerJob(latent, 1, 7.0, pos, neg), settings) != key
    masked = {**latent, "noise_mask": torch.ones(1, 8, 8)}
    assert batch_key(m, SamplerJob(masked, 1, 7.0, pos, neg), settings) is None
    area = [pos[0].replace(area=(4, 4, 0, 0))]
    assert batch_key(m, SamplerJob(latent, 1, 7.0, area, neg), settings) is None
    assert (
        batch_key(
            m,
            SamplerJob(latent, 1, 7.0, pos, neg),
            dataclasses.replace(settings, sampler_name="dpm_adaptive"),
        )
        is None
    )


def test_a_failing_job_does_not_fail_its_partners(engine_env, probe) -> None:
    """The middle job's negative comes from the SDXL checkpoint's CLIP (wrong width for SD1.5): the batch
    cannot run, every job samples alone, and only that job fails, naming its sampler node."""
    good = [("g0", 1, "a face", 7.0), ("g2", 3, "red", 5.0)]
    alone, _, _ = alone_and_batched(engine_env, probe, good)
    engine_env.cache.clear()
    probe.clear()
    specs = [
        JobSpec(job_workflow("g0", 1, "a face", 7.0)),
        JobSpec(job_workflow("bad", 2, "x", 7.0, neg_clip="xl")),
        JobSpec(job_workflow("g2", 3, "red", 5.0)),
    ]
    r0, bad, r2 = engine_env.run_many(specs)
    assert r0.ok and r2.ok
    assert bad.status == "failed" and bad.failure.node == "bad" and bad.failure.node_type == "KSampler"
    scale = max(float(a.abs().max()) for a in alone.values())
    for sid in ("g0", "g2"):  # alone after the failed batch: exactly the lone run
        torch.testing.assert_close(probe[sid], alone[sid], rtol=0, atol=1e-5 * scale)


def test_interrupting_one_job_of_a_batch_leaves_the_others_running(engine_env, probe) -> None:
    token = CancelToken()

    def on_event(ev: E.Event) -> None:
        if isinstance(ev, E.Progress) and ev.value == 2:
            token.cancel()

    specs = [JobSpec(job_workflow(sid, seed, text, cfg), job_id=sid) for sid, seed, text, cfg in JOBS]
    specs[1].cancel, specs[1].on_event = token, on_event
    results = engine_env.run_many(specs)
    assert [r.status for r in results] == ["success", "interrupted", "success"]
    assert set(probe) == {"ks0", "ks2"}


def test_cli_seed_sweep_samples_as_one_batch(engine, forwards, tmp_path: Path, capsys) -> None:
    path = tmp_path / "portrait.json"
    path.write_text((ROOT / "workflows" / "portrait.json").read_text())
    common = [
        "run",
        str(path),
        "--set",
        "checkpoint=tiny15.safetensors",
        "--set",
        "steps=2",
        "--set",
        "width=64",
        "--set",
        "height=64",
        "-q",
    ]
    args = cli.build_parser().parse_args([*common, "--sweep", "seed=1,2,3"])
    assert cli.cmd_run(args, engine) == 0
    assert forwards == [6, 6]  # three seeds, cond + uncond each, one forward per step
    outputs = sorted(p.name for p in engine.folders.output.rglob("*.png"))
    assert len(outputs) == 3
    forwards.clear()
    engine.cache.clear()
    args = cli.build_parser().parse_args([*common, "--sweep", "seed=4,5", "--batch-jobs", "1"])
    assert cli.cmd_run(args, engine) == 0
    assert forwards == [2, 2, 2, 2]


def test_ksampler_advanced_batches_its_step_range(engine_env, probe, forwards) -> None:
    """Two KSamplerAdvanced jobs (steps 0-2 of 3, leftover noise kept) batch and match their lone runs."""

    def advanced(sid: str, seed: int, cfg: float) -> dict:
        w = job_workflow(sid, seed, "a face", cfg, sampler="euler_ancestral")
        node = w["nodes"][sid]
        node["type"] = "KSamplerAdvanced"
        inputs = node["inputs"]
        inputs["noise_seed"] = inputs.pop("seed")
        del inputs["denoise"]
        inputs.update(add_noise="enable", start_at_step=0, end_at_step=2, return_with_leftover_noise="enable")
        return w

    got: dict[str, torch.Tensor] = {}
    engine_env.observers.append(
        lambda nid, t, outs: (
            got.__setitem__(nid, outs[0]["samples"].clone()) if t == "KSamplerAdvanced" else None
        )
    )
    alone = {}
    for sid, seed, cfg in (("a0", 1, 7.0), ("a1", 2, 3.0)):
        engine_env.cache.clear()
        assert engine_env.run(advanced(sid, seed, cfg)).ok
        alone[sid] = got[sid]
    engine_env.cache.clear()
    calls = len(forwards)
    results = engine_env.run_many([JobSpec(advanced("a0", 1, 7.0)), JobSpec(advanced("a1", 2, 3.0))])
    assert all(r.ok for r in results)
    assert forwards[calls:] == [4, 4]  # two steps, both jobs in each forward
    scale = max(float(a.abs().max()) for a in alone.values())
    for sid in alone:
        torch.testing.assert_close(got[sid], alone[sid], rtol=0, atol=1e-5 * scale)


def test_server_partners_share_a_batch_signature(engine_env) -> None:
    """What the server's worker compares before it takes a queued job as a partner (no run needed)."""
    wf = json.loads((ROOT / "workflows" / "portrait.json").read_text())
    base = {"checkpoint": "tiny15.safetensors", "steps": 2, "width": 64, "height": 64}
    sig = engine_env.batch_signature(wf, {**base, "seed": 1})
    assert sig is not None
    assert engine_env.batch_signature(wf, {**base, "seed": 2, "cfg": 3.0, "prompt": "an old man"}) == sig
    assert engine_env.batch_signature(wf, {**base, "seed": 1, "steps": 3}) != sig
    assert engine_env.batch_signature(wf, {**base, "seed": 1, "sampler": "heun"}) != sig
