"""Write the ComfyUI parity reference data (reference.json) by running ComfyUI's own code.

Usage::

    python tests/data/comfy_parity/generate.py /path/to/ComfyUI [--out tests/data/comfy_parity/reference.json]

Needs torch, numpy, scipy, einops and torchsde (what ComfyUI's sampling code imports); nothing of Atelier.
Only the sampling modules of the checkout are imported (comfy.k_diffusion.sampling, comfy.samplers,
comfy.model_sampling, comfy_extras.nodes_model_advanced). The heavy modules they import but these
computations never reach (model management, model patcher, hooks, ...) are replaced by empty stand-ins
defined below; the one function used from comfy.model_patcher (adding a post-CFG function to the
model options) is given a stand-in with the same behaviour.

What is recorded (see ``main``):

* ``model_sampling``: for SD1.5's discrete schedule as ComfyUI's ModelSamplingDiscrete node builds it
  (eps, v_prediction, lcm, x0; zsnr off and on): a few table values, timestep/sigma/percent_to_sigma
  lookups and calculate_input / calculate_denoised / noise_scaling on fixed tensors.
* ``schedulers``: every scheduler's sigmas for several step counts, and KSampler's schedules (denoise
  cut, the penultimate sigma dropped for some samplers) for a few denoise values.
* ``samplers``: every sampler name ComfyUI's KSampler lists, run through ComfyUI's KSAMPLER (noise
  scaling, the sampler function with ``extra_args = {"model_options": {}, "seed": SEED}``) on the toy
  denoiser of toy.py with CFG 2, from toy.py's latent and initial noise: the final latent and the number
  of model calls.
* ``areas``: the weight ComfyUI gives an area conditioning over its area (get_area_and_mult).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import toy  # noqa: E402

# ---------------------------------------------------------------------------------- stand-ins
_EMPTY_MODULES = (
    "comfy.model_management",
    "comfy.sampler_helpers",
    "comfy.patcher_extension",
    "comfy.hooks",
    "comfy.context_windows",
    "comfy.utils",
    "comfy.ldm.util",
    "comfy.sd",
    "comfy.latent_formats",
    "nodes",
    "node_helpers",
)


def _add_post_cfg_function(
    model_options: dict[str, Any], post_cfg_function: Any, disable_cfg1_optimization: bool = False
) -> dict[str, Any]:
    """Stand-in for comfy.model_patcher's helper: append to model_options' post-CFG function list."""
    model_options["sampler_post_cfg_function"] = [
        *model_options.get("sampler_post_cfg_function", []),
        post_cfg_function,
    ]
    if disable_cfg1_optimization:
        model_options["disable_cfg1_optimization"] = True
    return model_options


def _install_stand_ins(root: Path) -> None:
    sys.path.insert(0, str(root))
    for name in _EMPTY_MODULES:
        sys.modules[name] = types.ModuleType(name)
    sys.modules["comfy.ldm.util"].instantiate_from_config = None  # type: ignore[attr-defined]
    patcher = types.ModuleType("comfy.model_patcher")
    patcher.set_model_options_post_cfg_function = _add_post_cfg_function  # type: ignore[attr-defined]
    sys.modules["comfy.model_patcher"] = patcher
    import comfy

    comfy.model_patcher = patcher  # type: ignore[attr-defined]
    for name in (
        "model_management",
        "sampler_helpers",
        "patcher_extension",
        "hooks",
        "context_windows",
        "utils",
    ):
        setattr(comfy, name, sys.modules[f"comfy.{name}"])


def _commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


# ---------------------------------------------------------------------------------- helpers
def _r(values: Any, digits: int = 7) -> Any:
    """Floats rounded to ``digits`` significant digits (nested lists kept). Sigmas are stored with 9,
    which round-trips float32 exactly: the Brownian tree's noise depends on the exact times."""
    if isinstance(values, torch.Tensor):
        values = values.detach().double().tolist()
    if isinstance(values, list):
        return [_r(v, digits) for v in values]
    return float(f"{float(values):.{digits}g}")


class _Patcher:
    def __init__(self, model_sampling: Any) -> None:
        self.model_sampling = model_sampling

    def get_model_object(self, name: str) -> Any:
        assert name == "model_sampling"
        return self.model_sampling


class _Inner:
    def __init__(self, model_sampling: Any) -> None:
        self.model_sampling = model_sampling


class ToyModelWrap:
    """What ComfyUI's KSAMPLER gets as ``model_wrap`` (a CFGGuider): called with (x, sigma,
    model_options, seed), returns the guided denoised prediction. The guidance itself is ComfyUI's
    cfg_function (plain CFG, then the model options' post-CFG functions, which the CFG++ samplers use)."""

    def __init__(self, samplers: Any, model_sampling: Any, cfg: float) -> None:
        self.samplers = samplers
        self.inner_model = _Inner(model_sampling)
        self.model_patcher = _Patcher(model_sampling)
        self.cfg = cfg
        self.calls = 0

    def __call__(
        self, x: torch.Tensor, sigma: torch.Tensor, model_options: dict | None = None, seed: Any = None
    ):
        self.calls += 1
        model_options = model_options or {}
        cond = toy.cond_denoised(x, sigma)
        uncond = toy.uncond_denoised(x, sigma)
        return self.samplers.cfg_function(
            None, cond, uncond, self.cfg, x, sigma, model_options=model_options, cond=None, uncond=None
        )


def _model_sampling_classes(nodes_adv: Any, model_sampling_mod: Any) -> dict[str, Any]:
    """The classes ComfyUI's ModelSamplingDiscrete node builds for each of its sampling choices."""
    base = model_sampling_mod.ModelSamplingDiscrete
    kinds = {
        "eps": (base, model_sampling_mod.EPS),
        "v_prediction": (base, model_sampling_mod.V_PREDICTION),
        "lcm": (nodes_adv.ModelSamplingDiscreteDistilled, nodes_adv.LCM),
        "x0": (base, model_sampling_mod.X0),
    }
    return {name: type(f"MS_{name}", bases, {}) for name, bases in kinds.items()}


# ---------------------------------------------------------------------------------- sections
def model_sampling_data(classes: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    gen = torch.Generator().manual_seed(3)
    model_output = torch.randn((2, 4, 2, 2), generator=gen)
    model_input = torch.randn((2, 4, 2, 2), generator=gen) * 5
    for name, cls in classes.items():
        for zsnr in (False, True):
            ms = cls(None, zsnr=zsnr)
            table = ms.sigmas
            n = len(table)
            probe_sigmas = torch.tensor([0.03, 0.5, 1.0, 3.7, 14.0, float(table[n // 2])])
            probe_t = torch.tensor([0.0, 10.5, 250.0, 499.25, 998.0, 999.0])
            sig_pair = torch.tensor([float(table[-1]) * 0.999, 1.3])
            out[f"{name}{'_zsnr' if zsnr else ''}"] = {
                "len": n,
                "sigma_min": _r(ms.sigma_min),
                "sigma_max": _r(ms.sigma_max),
                "table_head": _r(table[:5]),
                "table_tail": _r(table[-5:]),
                "table_every_50": _r(table[::50]),
                "timestep_of": {"sigma": _r(probe_sigmas), "t": _r(ms.timestep(probe_sigmas))},
                "sigma_of": {"t": _r(probe_t), "sigma": _r(ms.sigma(probe_t))},
                "percent_to_sigma": {
                    str(p): _r(ms.percent_to_sigma(p)) for p in (0.0, 0.1, 0.25, 0.5, 0.75, 0.999, 1.0)
                },
                "calculate_input": _r(ms.calculate_input(sig_pair, model_input)),
                "calculate_denoised": _r(ms.calculate_denoised(sig_pair, model_output, model_input)),
                "noise_scaling": _r(ms.noise_scaling(sig_pair[:1], model_output[:1], model_input[:1])),
                "noise_scaling_max_denoise": _r(
                    ms.noise_scaling(sig_pair[:1], model_output[:1], model_input[:1], max_denoise=True)
                ),
            }
    return out


SCHEDULER_STEPS = (1, 2, 3, 7, 10, 33)
KSAMPLER_CASES = (  # (steps, denoise)
    (10, 1.0),
    (7, 1.0),
    (7, 0.6),
    (20, 0.35),
    (3, 0.99995),
)
KSAMPLER_SAMPLER_PROBES = ("euler", "dpm_2", "uni_pc")  # one that keeps every sigma, ones that drop one


def scheduler_data(samplers: Any, classes: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for variant, cls, zsnr in (
        ("eps", classes["eps"], False),
        ("eps_zsnr", classes["eps"], True),
        ("lcm", classes["lcm"], False),
    ):
        ms = cls(None, zsnr=zsnr)
        per: dict[str, Any] = {"calculate_sigmas": {}, "ksampler": {}}
        for name in samplers.SCHEDULER_NAMES:
            per["calculate_sigmas"][name] = {
                str(steps): _r(samplers.calculate_sigmas(ms, name, steps), 9) for steps in SCHEDULER_STEPS
            }
            cases = []
            for sampler_name in KSAMPLER_SAMPLER_PROBES:
                for steps, denoise in KSAMPLER_CASES:
                    ks = samplers.KSampler(_Patcher(ms), steps, "cpu", sampler_name, name, denoise)
                    cases.append(
                        {
                            "sampler": sampler_name,
                            "steps": steps,
                            "denoise": denoise,
                            "sigmas": _r(ks.sigmas, 9),
                        }
                    )
            per["ksampler"][name] = cases
        out[variant] = per
    return out


SAMPLER_CASES = (  # (scheduler, steps, denoise)
    ("karras", 6, 1.0),
    ("normal", 4, 0.6),
)


def sampler_data(samplers: Any, classes: dict[str, Any]) -> dict[str, Any]:
    ms = classes["eps"](None, zsnr=False)
    out: dict[str, Any] = {}
    latent = toy.latent_image()
    for name in samplers.SAMPLER_NAMES:
        runs = []
        for scheduler, steps, denoise in SAMPLER_CASES:
            ks = samplers.KSampler(_Patcher(ms), steps, "cpu", name, scheduler, denoise)
            sigmas = ks.sigmas.clone()
            wrap = ToyModelWrap(samplers, ms, toy.CFG)
            noise = toy.initial_noise(toy.SEED)
            sampler = samplers.sampler_object(name)
            extra_args = {"model_options": {}, "seed": toy.SEED}
            result = sampler.sample(wrap, ks.sigmas, extra_args, None, noise, latent_image=latent)
            runs.append(
                {
                    "scheduler": scheduler,
                    "steps": steps,
                    "denoise": denoise,
                    "sigmas": _r(sigmas, 9),
                    "calls": wrap.calls,
                    "out": _r(result.reshape(-1)),
                }
            )
        out[name] = runs
    return out


AREA_CASES = (  # latent (h, w) and the area (h, w, y, x) in latent cells, strength
    ((16, 16), (8, 8, 4, 4), 1.0),
    ((16, 16), (8, 16, 0, 0), 0.7),
    ((16, 16), (16, 6, 0, 10), 1.0),
    ((16, 12), (5, 5, 11, 0), 1.3),
    ((16, 16), (12, 12, 2, 3), 1.0),
    ((12, 20), (3, 30, 4, 0), 1.0),
)


def area_data(samplers: Any) -> list[dict[str, Any]]:
    out = []
    for (h, w), area, strength in AREA_CASES:
        x_in = torch.zeros((1, 4, h, w))
        conds = {"area": area, "strength": strength, "model_conds": {}, "uuid": None}
        result = samplers.get_area_and_mult(conds, x_in, torch.tensor([500.0]))
        out.append(
            {
                "latent": [h, w],
                "area": list(area),
                "strength": strength,
                "used_area": list(result.area),
                "mult": _r(result.mult[0, 0]),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("comfyui", type=Path, help="path to a ComfyUI checkout")
    parser.add_argument("--out", type=Path, default=HERE / "reference.json")
    parser.add_argument("--commit", default=None, help="the checkout's commit (default: git rev-parse HEAD)")
    args = parser.parse_args()
    root = args.comfyui.resolve()
    _install_stand_ins(root)
    samplers = importlib.import_module("comfy.samplers")
    model_sampling_mod = importlib.import_module("comfy.model_sampling")
    nodes_adv = importlib.import_module("comfy_extras.nodes_model_advanced")
    import torchsde

    torch.set_num_threads(1)
    classes = _model_sampling_classes(nodes_adv, model_sampling_mod)
    data = {
        "comfyui_commit": args.commit or _commit(root),
        "torch": torch.__version__,
        "torchsde": getattr(torchsde, "__version__", "unknown"),
        "ksampler_names": list(samplers.KSAMPLER_NAMES),
        "sampler_names": list(samplers.SAMPLER_NAMES),
        "scheduler_names": list(samplers.SCHEDULER_NAMES),
        "discard_penultimate_sigma_samplers": sorted(samplers.KSampler.DISCARD_PENULTIMATE_SIGMA_SAMPLERS),
        "toy": {"seed": toy.SEED, "cfg": toy.CFG, "shape": list(toy.SHAPE)},
        "model_sampling": model_sampling_data(classes),
        "schedulers": scheduler_data(samplers, classes),
        "samplers": sampler_data(samplers, classes),
        "areas": area_data(samplers),
    }
    args.out.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
