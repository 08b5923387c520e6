"""Hypernetworks on a tiny SD1 model: a file in A1111's layout, the attention it changes computed by
hand, strength 0 as the identity, and the UNet's own attention back after every use."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.engine.models.attention import AttentionInfo, attention_layers
from atelier.engine.node import JobContext

ROOT = Path(__file__).resolve().parents[2]


def a1111_module(width: int, seed: int) -> dict[str, torch.Tensor]:
    """One HypernetworkModule's state dict as A1111 writes it: layer structure [1, 2, 1] with relu and
    dropout, i.e. Linear, ReLU, Dropout, Linear as ``linear.0`` ... ``linear.3``."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Linear(width, width * 2),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.3),
        torch.nn.Linear(width * 2, width),
    )
    return {"linear." + k: v.clone() for k, v in net.state_dict().items()}


def write_hypernetwork(path: Path, widths: tuple[int, ...], seed: int = 0) -> dict:
    data: dict = {
        w: [a1111_module(w, seed + 2 * n), a1111_module(w, seed + 2 * n + 1)] for n, w in enumerate(widths)
    }
    data.update(
        {
            "step": 1000,
            "name": path.stem,
            "layer_structure": [1, 2, 1],
            "activation_func": "relu",
            "is_layer_norm": False,
            "weight_initialization": "Normal",
            "use_dropout": True,
            "activate_output": False,
            "last_layer_dropout": False,
            "sd_checkpoint": "0123456789",
            "sd_checkpoint_name": "tiny15",
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)
    return data


def reference_net(sd: dict[str, torch.Tensor]):
    def f(x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(x @ sd["linear.0.weight"].T + sd["linear.0.bias"])
        return h @ sd["linear.3.weight"].T + sd["linear.3.bias"]

    return f


@pytest.fixture()
def hyper_file(models_root: Path) -> dict:
    return write_hypernetwork(models_root / "hypernetworks" / "tinyhn.pt", (32, 64))


def _model(engine_env, models_root: Path):
    from atelier.nodes.loaders import CheckpointLoaderSimple

    ctx = engine_env.make_context(JobContext("j"), "n", "CheckpointLoaderSimple")
    return CheckpointLoaderSimple().run(ctx, ckpt_name="tiny15.safetensors")[0]


def _hyper(engine_env, model, strength: float):
    from atelier.nodes.hypernetwork import HypernetworkLoader

    ctx = engine_env.make_context(JobContext("j"), "n", "HypernetworkLoader")
    return HypernetworkLoader().run(ctx, model=model, hypernetwork_name="tinyhn.pt", strength=strength)


def test_cross_attention_output_matches_the_hand_computed_hypernetwork(
    engine_env, models_root, hyper_file
) -> None:
    model = _model(engine_env, models_root)
    patched = _hyper(engine_env, model, 0.7)
    name, attn = next((n, m) for n, m in attention_layers(model.unet) if n.endswith("attn2"))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, attn.to_q.in_features, generator=g)
    context = torch.randn(2, 5, attn.to_k.in_features, generator=g)
    width = context.shape[-1]
    k_in = context + reference_net(hyper_file[width][0])(context) * 0.7
    v_in = context + reference_net(hyper_file[width][1])(context) * 0.7
    q, k, v = attn.to_q(x), attn.to_k(k_in), attn.to_v(v_in)
    heads, d = attn.heads, q.shape[-1] // attn.heads
    split = lambda t: t.view(2, -1, heads, d).transpose(1, 2)  # noqa: E731
    weights = torch.softmax(split(q) @ split(k).transpose(-1, -2) / math.sqrt(d), dim=-1)
    expected = attn.to_out[0]((weights @ split(v)).transpose(1, 2).reshape(2, -1, heads * d))
    with torch.no_grad():
        plain = attn(x, encoder_hidden_states=context)
        with patched.session():
            got = attn(x, encoder_hidden_states=context)
        after = attn(x, encoder_hidden_states=context)
        torch.testing.assert_close(got, expected.detach(), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-3)
    assert torch.equal(after, plain)  # the layer's own processor is back
    assert type(attn.processor).__name__ == "AttnProcessor2_0"


def test_strength_zero_is_the_identity_and_the_self_attention_is_patched_too(
    engine_env, models_root, hyper_file
) -> None:
    model = _model(engine_env, models_root)
    zero = _hyper(engine_env, model, 0.0)
    one = _hyper(engine_env, model, 1.0)
    name, attn = next((n, m) for n, m in attention_layers(model.unet) if n.endswith("attn1"))
    x = torch.randn(1, 9, attn.to_q.in_features, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        plain = attn(x)
        with zero.session():
            same = attn(x)
        with one.session():
            changed = attn(x)
    torch.testing.assert_close(same, plain, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(changed, plain, atol=1e-3)
    # widths the file does not have pass through unchanged
    patch = one.attention_patches[0]
    t = torch.randn(1, 3, 48)
    assert patch(t, t, t, AttentionInfo("x", "attn1"))[1] is t


def _run(engine_env, strength: float | None):
    wf = json.loads((ROOT / "workflows" / "portrait.json").read_text())
    wf = copy.deepcopy(wf)
    if strength is not None:
        wf["nodes"]["hn"] = {
            "type": "HypernetworkLoader",
            "inputs": {
                "model": {"node": "loader", "output": "MODEL"},
                "hypernetwork_name": "tinyhn.pt",
                "strength": strength,
            },
        }
        wf["nodes"]["sampler"]["inputs"]["model"] = {"node": "hn", "output": "MODEL"}
    res = engine_env.run(
        wf, overrides={"checkpoint": "tiny15.safetensors", "steps": 2, "width": 64, "height": 64, "seed": 5}
    )
    assert res.ok, res.failure
    ref = res.outputs["save"]["images"][0]
    return np.asarray(Image.open(engine_env.folders.output / ref["subfolder"] / ref["filename"])).astype(int)


def test_hypernetwork_in_a_workflow(engine_env, models_root, hyper_file) -> None:
    base = _run(engine_env, None)
    zero = _run(engine_env, 0.0)
    half = _run(engine_env, 0.5)
    one = _run(engine_env, 1.0)
    assert np.abs(zero - base).max() <= 1
    assert (half != base).any() and (one != half).any()
    assert (_run(engine_env, None) == base).all()  # the model without it is unchanged afterwards


def test_bad_hypernetwork_files_are_refused_naming_them(engine_env, models_root) -> None:
    from atelier.engine.models.hypernetwork import HypernetworkError, load_hypernetwork

    folder = models_root / "hypernetworks"
    folder.mkdir(exist_ok=True)
    torch.save(
        {"activation_func": "gelu-ish", 32: [a1111_module(32, 0), a1111_module(32, 1)]}, folder / "odd.pt"
    )
    with pytest.raises(HypernetworkError, match=r"odd\.pt: activation 'gelu-ish'"):
        load_hypernetwork(folder / "odd.pt")
    torch.save({"step": 3}, folder / "empty.pt")
    with pytest.raises(HypernetworkError, match=r"empty\.pt: no networks"):
        load_hypernetwork(folder / "empty.pt")
    torch.save(Path("x"), folder / "code.pt")  # an arbitrary object: weights_only refuses to build it
    with pytest.raises(HypernetworkError, match=r"code\.pt: cannot be read as a weights-only"):
        load_hypernetwork(folder / "code.pt")
