"""Loading speed machinery: tensors read straight onto the device, and the loader's host-memory cache.

The reference for direct loading is the plain path computed another way: every tensor of the file read
on the host (``load_state_dict_file``), renamed by diffusers' converter and loaded into a module built
normally. The host cache is checked on what it hands back (same weights, same outputs), on its budget and
on its least-recently-used order.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

from atelier.engine.host_cache import HostCache, clone_to, host_bytes
from atelier.engine.model_loader import ModelLoader
from atelier.engine.models import load_checkpoint, write_tiny_checkpoint
from atelier.engine.models.detect import detect_index
from atelier.engine.models.files import load_state_dict_file, open_single_file
from atelier.engine.models.handles import checkpoint_loader
from atelier.engine.models.names import UNET_PREFIX


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loading")
    return {
        "a": write_tiny_checkpoint("sd15", root / "a.safetensors", seed=0, dtype=torch.float16),
        "b": write_tiny_checkpoint("sd15", root / "b.safetensors", seed=1, dtype=torch.float16),
    }


def _reference_unet(path: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The UNet weights through the plain path: the whole file on the host, converted, loaded normally."""
    state = load_state_dict_file(path)
    info = detect_index(open_single_file(path))
    unet_sd = {k: v for k, v in state.items() if k.startswith(UNET_PREFIX)}
    converted = convert_ldm_unet_checkpoint(unet_sd, info.unet_config)
    unet = UNet2DConditionModel.from_config(info.unet_config)
    unet.load_state_dict(converted, strict=True)
    return {k: v.to(dtype) for k, v in unet.state_dict().items()}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key].cpu(), b[key].cpu()), key


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_loaded_weights_match_the_plain_path(files: dict[str, Path], dtype: torch.dtype) -> None:
    loaded = load_checkpoint(files["a"], dtype=dtype)
    _assert_same(loaded.unet.state_dict(), _reference_unet(files["a"], dtype))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_direct_to_device_matches_the_host_path(files: dict[str, Path]) -> None:
    on_device = load_checkpoint(files["a"], device="cuda", dtype=torch.float16)
    _assert_same(on_device.unet.state_dict(), _reference_unet(files["a"], torch.float16))
    assert next(on_device.unet.parameters()).device.type == "cuda"


def test_safetensors_reads_on_a_device_and_others_through_the_host(
    files: dict[str, Path], tmp_path: Path
) -> None:
    index = open_single_file(files["a"])
    assert index.reads_on_device
    key = next(k for k in index.keys() if k.startswith(UNET_PREFIX))
    assert torch.equal(index.read_on(key, "cpu"), index.read(key))
    pickle = tmp_path / "small.ckpt"
    torch.save({"state_dict": {key: index.read(key)}}, pickle)
    torch_index = open_single_file(pickle)
    assert not torch_index.reads_on_device  # torch.load reads on the host; moved from there
    assert torch.equal(torch_index.read_on(key, "cpu"), index.read(key))


# -- the host cache -----------------------------------------------------------------------------------


def _linear(n: int, seed: int) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(n, n, bias=False)  # n * n * 4 bytes


def test_host_cache_keeps_to_its_budget_least_recently_used_first() -> None:
    size = host_bytes(_linear(8, 0))
    assert size == 8 * 8 * 4
    cache = HostCache(budget_bytes=2 * size)
    for name in "abc":
        assert cache.put(name, _linear(8, 0))
    assert cache.keys() == ["b", "c"] and cache.used_bytes == 2 * size  # "a" went first
    b = cache.take("b")  # on the host: the object itself, leaving the cache (the loader holds it again)
    assert isinstance(b, torch.nn.Linear) and cache.keys() == ["c"]
    cache.put("b", b)
    cache.put("d", _linear(8, 1))
    assert cache.keys() == ["b", "d"]  # "c" was the least recently used
    assert not cache.put("big", _linear(32, 0))  # larger than the whole budget: not kept
    assert not cache.put("plain", object())  # nothing to keep
    assert not HostCache(0).put("x", _linear(8, 0))  # a zero budget keeps nothing


def test_host_copies_are_clones_with_the_same_weights() -> None:
    class Holder:
        def __init__(self) -> None:
            self.unet = _linear(8, 0)
            self.encoders = [_linear(4, 1), _linear(4, 2)]
            self.info = {"family": "sd15"}

    held = Holder()
    copy = clone_to(held, "cpu")
    assert copy is not held and copy.info is held.info  # what is not a module is shared
    assert copy.unet is not held.unet and copy.encoders[1] is not held.encoders[1]
    assert torch.equal(copy.unet.weight, held.unet.weight)
    assert copy.unet.weight.data_ptr() != held.unet.weight.data_ptr()  # its own memory
    assert torch.equal(copy.encoders[1].weight, held.encoders[1].weight)


def _unet_out(loaded: object) -> torch.Tensor:
    unet = loaded.unet  # type: ignore[attr-defined]
    g = torch.Generator().manual_seed(0)
    cfg = unet.config
    sample = torch.randn(1, 4, 8, 8, generator=g, dtype=unet.dtype)
    context = torch.randn(1, 77, cfg.cross_attention_dim, generator=g, dtype=unet.dtype)
    with torch.no_grad():
        return unet(sample, torch.tensor([500]), encoder_hidden_states=context).sample


def test_loader_takes_a_dropped_checkpoint_back_from_host_memory(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    models = ModelLoader("cpu", torch.float32, max_loaded=1, host=HostCache(1 << 30))
    first = models.load(files["a"], checkpoint_loader)
    models.load(files["b"], checkpoint_loader)  # drops "a" from the device into host memory
    assert models.loads == 2 and len(models.host.keys()) == 1  # type: ignore[union-attr]

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("read the file again")

    monkeypatch.setattr("atelier.engine.models.load.open_single_file", no_reading)
    again = models.load(files["a"], checkpoint_loader)
    assert models.loads == 2 and models.host.hits == 1  # type: ignore[union-attr]
    assert again is first  # the device is the host: the object itself was kept, not a copy


def test_a_copying_cache_hands_out_fresh_copies_that_compute_the_same(files: dict[str, Path]) -> None:
    """Off the host (CUDA) the cache keeps a host copy and hands out clones on the device; the same path
    runs here with a cache told to copy on the CPU, compared with the model the copy came from."""
    host = HostCache(1 << 30, "cpu", keep_objects=False)
    models = ModelLoader("cpu", torch.float32, max_loaded=1, host=host)
    original = models.load(files["a"], checkpoint_loader)
    expected = _unet_out(original)
    reference = {k: v.clone() for k, v in original.unet.state_dict().items()}
    models.load(files["b"], checkpoint_loader)  # "a" dropped: its host copy is made now
    again = models.load(files["a"], checkpoint_loader)
    assert models.loads == 2 and host.hits == 1
    assert again is not original and again.unet is not original.unet
    assert again.unet.conv_in.weight.data_ptr() != original.unet.conv_in.weight.data_ptr()
    _assert_same(again.unet.state_dict(), reference)
    out = _unet_out(again)
    assert torch.equal(out, expected) and out.abs().sum() > 0  # the same, and live
    assert again.info is original.info and again.tokenizers is original.tokenizers
    # the host copy of "a" stays for the next time, and "b" (dropped for "a") joined it
    assert len(host.keys()) == 2 and host.used_bytes == 2 * host_bytes(original)
