"""The package's public surface, argument checks, and the full-size random SD1.5 (opt-in: --runslow)."""

from pathlib import Path

import pytest
import torch

import atelier.engine.models as models
from atelier.engine.models import load_checkpoint, write_tiny_checkpoint


def test_every_export_resolves() -> None:
    assert sorted(models.__all__) == sorted(models._EXPORTS)
    for name in models.__all__:
        assert getattr(models, name) is not None
    with pytest.raises(AttributeError):
        models.no_such_thing  # noqa: B018


def test_bad_arguments_are_value_errors_not_file_errors(tmp_path: Path) -> None:
    path = write_tiny_checkpoint("sd15", tmp_path / "t.safetensors", dtype=torch.float16)
    with pytest.raises(ValueError, match="dtype"):
        load_checkpoint(path, dtype=torch.int8)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            load_checkpoint(path, device="cuda")


@pytest.mark.slow
def test_full_size_random_sd15(request: pytest.FixtureRequest) -> None:
    if not request.config.getoption("--runslow", default=False):
        pytest.skip("full-size model: opt in with --runslow")
    from atelier.engine.models import build_random_sd15

    ck = build_random_sd15(seed=0, dtype=torch.bfloat16)
    counts = {
        "unet": sum(p.numel() for p in ck.unet.parameters()),
        "vae": sum(p.numel() for p in ck.vae.parameters()) if ck.vae is not None else 0,
        "text": sum(p.numel() for p in ck.text_encoders[0].parameters()),
    }
    assert counts == {"unet": 859_520_964, "vae": 83_653_863, "text": 123_060_480}
    with torch.no_grad():
        context = torch.randn(1, 77, 768, dtype=torch.bfloat16)
        out = ck.unet(
            torch.randn(1, 4, 16, 16, dtype=torch.bfloat16), 500, encoder_hidden_states=context
        ).sample
    assert out.shape == (1, 4, 16, 16) and torch.isfinite(out).all()
