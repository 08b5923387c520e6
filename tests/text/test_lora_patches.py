"""WeightPatch deltas, patching modules in place and restoring them bit for bit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from atelier.engine.models.patches import (
    WeightPatch,
    apply_patches,
    merge_patches,
    patched,
    restore_weights,
    scale_patches,
)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def bitwise_equal(module: torch.nn.Module, saved: dict[str, torch.Tensor]) -> bool:
    state = module.state_dict()
    return state.keys() == saved.keys() and all(torch.equal(state[k], saved[k]) for k in saved)


def test_linear_delta() -> None:
    torch.manual_seed(0)
    up, down = torch.randn(6, 3), torch.randn(3, 5)
    patch = WeightPatch(up, down, alpha=1.5, strength=0.5)
    assert patch.rank == 3 and patch.scale == pytest.approx(0.25)
    expected = torch.einsum("or,ri->oi", up, down) * 0.25
    torch.testing.assert_close(patch.delta((6, 5)), expected)
    assert WeightPatch(up, down).scale == 1.0
    # A linear LoRA on a 1x1 conv weight (and back) is a reshape.
    assert patch.delta((6, 5, 1, 1)).shape == (6, 5, 1, 1)
    with pytest.raises(ValueError, match="does not fit"):
        patch.delta((6, 4))


def test_conv_delta_is_the_composed_kernel() -> None:
    torch.manual_seed(1)
    down, up = torch.randn(4, 3, 3, 3), torch.randn(8, 4, 1, 1)
    delta = WeightPatch(up, down).delta((8, 3, 3, 3))
    x = torch.randn(1, 3, 9, 9)
    torch.testing.assert_close(
        F.conv2d(x, delta, padding=1), F.conv2d(F.conv2d(x, down, padding=1), up), rtol=1e-4, atol=1e-4
    )


def test_tucker_mid_delta_is_the_composed_kernel() -> None:
    torch.manual_seed(2)
    down, mid, up = torch.randn(4, 3, 1, 1), torch.randn(5, 4, 3, 3), torch.randn(8, 5, 1, 1)
    patch = WeightPatch(up, down, alpha=2.0, mid=mid)
    delta = patch.delta((8, 3, 3, 3))
    x = torch.randn(1, 3, 9, 9)
    composed = F.conv2d(F.conv2d(F.conv2d(x, down), mid, padding=1), up) * 0.5
    torch.testing.assert_close(F.conv2d(x, delta, padding=1), composed, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_patched_adds_in_float32_and_restores_bitwise(dtype: torch.dtype) -> None:
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Conv2d(6, 8, 3)).to(dtype)
    saved = snapshot(net)
    p_lin = WeightPatch(torch.randn(6, 2), torch.randn(2, 5), alpha=1.0, strength=0.7)
    p_conv = WeightPatch(
        torch.randn(8, 2, 1, 1, dtype=torch.float16), torch.randn(2, 6, 3, 3, dtype=torch.float16)
    )
    patches = {"0.weight": [p_lin], "1.weight": [p_conv]}
    with patched(net, patches) as same:
        assert same is net
        for name, p in (("0.weight", p_lin), ("1.weight", p_conv)):
            expected = (saved[name].float() + p.delta(saved[name].shape)).to(dtype)
            assert torch.equal(net.get_parameter(name), expected)
            assert net.get_parameter(name).dtype == dtype
        assert torch.equal(net[0].bias, saved["0.bias"])
    assert bitwise_equal(net, saved)


def test_nested_repeated_and_failing_blocks_restore() -> None:
    torch.manual_seed(4)
    net = torch.nn.Linear(4, 4)
    saved = snapshot(net)
    a = {"weight": [WeightPatch(torch.randn(4, 1), torch.randn(1, 4))]}
    b = {"weight": [WeightPatch(torch.randn(4, 2), torch.randn(2, 4), strength=-0.3)]}
    with patched(net, a):
        outer = net.weight.detach().clone()
        with patched(net, b):
            inner = net.weight.detach().clone()
            assert not torch.equal(inner, outer)
        assert torch.equal(net.weight, outer)
        with patched(net, b):
            assert torch.equal(net.weight, inner)
    assert bitwise_equal(net, saved)
    for _ in range(3):
        with patched(net, a):
            assert torch.equal(net.weight, outer)
    assert bitwise_equal(net, saved)

    with pytest.raises(RuntimeError, match="boom"), patched(net, a):
        raise RuntimeError("boom")
    assert bitwise_equal(net, saved)

    with pytest.raises(KeyError, match="nope"), patched(net, {**a, "nope.weight": list(b["weight"])}):
        pass
    assert bitwise_equal(net, saved)
    with (
        pytest.raises(ValueError, match="cannot patch"),
        patched(net, {"weight": [WeightPatch(torch.ones(3, 1), torch.ones(1, 4))]}),
    ):
        pass
    assert bitwise_equal(net, saved)


def test_apply_and_restore_functions() -> None:
    net = torch.nn.Linear(3, 2)
    saved = snapshot(net)
    backups = apply_patches(net, {"weight": [WeightPatch(torch.ones(2, 1), torch.ones(1, 3))]})
    assert set(backups) == {"weight"}
    torch.testing.assert_close(net.weight.detach(), saved["weight"] + 1)
    restore_weights(net, backups)
    assert bitwise_equal(net, saved)
    assert apply_patches(net, {"weight": []}) == {}


def test_merge_and_scale() -> None:
    p1 = WeightPatch(torch.ones(2, 1), torch.ones(1, 3))
    p2 = WeightPatch(2 * torch.ones(2, 1), torch.ones(1, 3), alpha=0.5)
    merged = merge_patches({"a.weight": [p1]}, {"a.weight": [p2], "b.weight": [p1]}, {"b.weight": (p2,)})
    assert merged == {"a.weight": (p1, p2), "b.weight": (p1, p2)}
    net = torch.nn.Linear(3, 2)
    base = net.weight.detach().clone()
    with patched(net, {"weight": merged["a.weight"]}):
        torch.testing.assert_close(net.weight.detach(), base + 1 + 2 * 0.5)
    scaled = scale_patches(merged, 0.5)
    assert [p.strength for p in scaled["a.weight"]] == [0.5, 0.5]
    assert p1.strength == 1.0
