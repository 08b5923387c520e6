"""Tiny random-weight upscale models, built from spandrel's own architecture classes and saved in the
layouts real files use: ESRGAN's original ``model.N`` names, Real-ESRGAN's BasicSR names under
``params_ema``, and Real-ESRGAN Compact's ``body.N`` names."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from atelier.engine.models.spandrel_compat import spandrel


def esrgan(scale: int = 4, seed: int = 0) -> nn.Module:
    """RRDBNet, 8 filters, 1 block (old-arch ``model.N`` names)."""
    spandrel()
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    return ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=scale).eval()


def compact(scale: int = 2, seed: int = 0, num_feat: int = 8, num_conv: int = 2) -> nn.Module:
    """SRVGGNetCompact (Real-ESRGAN's small models: ``body.N`` names)."""
    spandrel()
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(seed)
    return Compact(num_in_ch=3, num_out_ch=3, num_feat=num_feat, num_conv=num_conv, upscale=scale).eval()


def state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}


def basicsr_layout(old: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ESRGAN's old ``model.N`` names as Real-ESRGAN (BasicSR's RRDBNet) saves them, 4x only:
    conv_first, body.I.rdbJ.convK, conv_body, conv_up1, conv_up2, conv_hr, conv_last."""
    blocks = {int(m.group(1)) for k in old if (m := re.match(r"model\.1\.sub\.(\d+)\.RDB", k))}
    trunk = max(blocks) + 1
    fixed = {"model.0": "conv_first", f"model.1.sub.{trunk}": "conv_body", "model.3": "conv_up1"}
    fixed |= {"model.6": "conv_up2", "model.8": "conv_hr", "model.10": "conv_last"}
    new = {}
    for key, value in old.items():
        m = re.match(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$", key)
        if m:
            new[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = value
            continue
        stem, kind = key.rsplit(".", 1)
        new[f"{fixed[stem]}.{kind}"] = value
    return new


def write_safetensors(module: nn.Module, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state_dict(module), str(path))
    return path


def write_pth(module: nn.Module, path: Path, *, wrap: str | None = None, layout: str = "original") -> Path:
    """A ``torch.save``d state dict (optionally inside ``{wrap: ...}``, as trainers save them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = state_dict(module)
    if layout == "basicsr":
        sd = basicsr_layout(sd)
    torch.save({wrap: sd} if wrap else sd, str(path))
    return path


def reference(module: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """The module on the whole IMAGE ``[B, H, W, 3]`` at once, clamped like spandrel does."""
    with torch.no_grad():
        return module(image.movedim(-1, 1).float()).clamp(0, 1).movedim(1, -1)
