"""Values that validate also run: properties over the numbers and names a workflow can carry, checked
against the code that uses them (no server). A value the validator lets through must work when the node
runs; one it refuses must be refused with a message naming the input.

- KSampler's ``denoise``: any float in [0, 1] (subnormals such as 1e-320 included) with any step count
  either validates and yields a schedule of ``steps`` steps, or is refused at validation naming
  ``denoise``; the run-time check refuses exactly the same values.
- SaveImage's ``filename_prefix``: any text either validates and saves inside the output folder, or is
  refused at validation naming ``filename_prefix`` and refused again (not written) at run time.
- JSON ``true``/``false`` are not integers or numbers, and non-finite numbers are refused.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import hypothesis
import hypothesis.strategies as st
import pytest
import torch

from atelier.engine import folders as F
from atelier.engine.node import Float, Int
from atelier.engine.sampling.ksampler import MAX_SCHEDULE_STEPS, schedule
from atelier.engine.sampling.model_sampling import ModelSampling
from atelier.engine.validate import coerce_literal
from atelier.nodes.image import SaveImage, save_images
from atelier.nodes.model_merging import CheckpointSave, VAESave
from atelier.nodes.sampling import KSampler
from tests.reliability import budget

SETTINGS = hypothesis.settings(
    max_examples=budget.examples("values"),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
MODEL = SimpleNamespace(sampling=ModelSampling.discrete())

denoises = st.one_of(
    st.floats(min_value=0.0, max_value=1.0, allow_subnormal=True),
    st.sampled_from([0.0, 5e-324, 1e-320, 1e-300, 1e-9, 1e-5, 2e-5, 1e-4, 0.01, 0.9999, 1.0]),
)


@SETTINGS
@hypothesis.given(steps=st.integers(min_value=1, max_value=10000), denoise=denoises)
def test_a_denoise_that_validates_runs(steps: int, denoise: float) -> None:
    problems = KSampler.check_inputs(None, steps=steps, denoise=denoise)  # type: ignore[arg-type]
    if problems:
        assert [p[0] for p in problems] == ["denoise"] and f"{denoise!r}" in problems[0][1]
        with pytest.raises(ValueError, match="denoise"):
            schedule(MODEL, "karras", "euler", steps, denoise)
        assert steps / denoise > MAX_SCHEDULE_STEPS
        return
    sigmas = schedule(MODEL, "karras", "euler", steps, denoise)
    assert sigmas.shape == ((steps + 1,) if denoise > 0 else (0,))
    assert bool(torch.isfinite(sigmas).all())


def test_the_smallest_denoises_are_refused_with_the_least_that_runs() -> None:
    (problem,) = KSampler.check_inputs(None, steps=20, denoise=1e-320)  # type: ignore[arg-type]
    assert problem[0] == "denoise" and "at least 0.0002" in problem[1]
    assert KSampler.check_inputs(None, steps=20, denoise=0.0002) == []  # type: ignore[arg-type]
    assert schedule(MODEL, "karras", "euler", 20, 0.0002).shape == (21,)
    assert KSampler.check_inputs(None, steps=20, denoise=0.0) == []  # type: ignore[arg-type]


prefixes = st.one_of(
    st.text(max_size=40),
    st.lists(
        st.sampled_from(["a", "b", ".", "..", "", "/", "\\", "C:", "\x00", "\n", "é", "x" * 210]), max_size=6
    ).map("/".join),
)


@SETTINGS
@hypothesis.given(prefix=prefixes)
def test_a_filename_prefix_that_validates_saves_inside_the_output_folder(tmp_path: Path, prefix: str) -> None:
    out = tmp_path / "output"
    out.mkdir(exist_ok=True)
    image = torch.zeros(1, 2, 2, 3)
    problems = SaveImage.check_inputs(None, filename_prefix=prefix)  # type: ignore[arg-type]
    before = set(tmp_path.rglob("*"))
    if problems:
        assert [p[0] for p in problems] == ["filename_prefix"]
        with pytest.raises(ValueError, match="filename prefix"):
            save_images(image, out, prefix, None)
        assert set(tmp_path.rglob("*")) == before
        return
    (name,) = save_images(image, out, prefix, None)
    written = (out / name).resolve()
    assert out.resolve() in written.parents and written.is_file()
    assert written.name.endswith("_.png")


@pytest.mark.parametrize(
    "prefix",
    ["../x", "a/../../x", "sub/..", "/etc/x", "\\\\server\\x", "C:x", "a\x00b", "a\nb", "\ud800", "x" * 201],
)
def test_bad_filename_prefixes_are_refused_at_validation(prefix: str) -> None:
    assert F.relative_name_problem(prefix) is not None
    for node in (SaveImage, CheckpointSave, VAESave):  # every node that writes a file by prefix
        ((name, message),) = node.check_inputs(None, filename_prefix=prefix)  # type: ignore[arg-type]
        assert name == "filename_prefix" and message
    assert CheckpointSave.check_inputs(None, filename_prefix="checkpoints/mix") == []  # type: ignore[arg-type]


@SETTINGS
@hypothesis.given(value=st.one_of(st.booleans(), st.floats(allow_nan=True, allow_infinity=True)))
def test_booleans_are_not_numbers_and_numbers_are_finite(value: object) -> None:
    for spec in (Int("n", 0), Float("x", 0.0)):
        coerced, problem = coerce_literal(spec, value)
        if (
            isinstance(value, bool)
            or not math.isfinite(value)
            or (spec.type == "INT" and not value.is_integer())
        ):
            assert coerced is None and problem is not None and problem[0] == "invalid_type"
        else:
            assert problem is None and coerced == value
