"""Weight-free line art and normal maps as pure functions, and depth maps from a user's ONNX depth
estimator (a tiny live ONNX model written here in the real input/output layout), with the missing-file and
PyTorch-file errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.engine.imaging.depth import model_input_size
from atelier.engine.imaging.preprocess import lineart_standard, normal_from_depth
from atelier.engine.runtime import Engine
from atelier.engine.validate import check


def drawing() -> torch.Tensor:
    """A light page with one dark line (column 30..32) and one faint line (column 60)."""
    img = torch.full((1, 64, 96, 3), 0.9)
    img[:, :, 30:33] = 0.1
    img[:, :, 60] = 0.8
    return img


def test_lineart_is_white_on_black_where_the_picture_is_darker_than_around() -> None:
    lines = lineart_standard(drawing(), gaussian_sigma=4.0, intensity_threshold=8)
    assert lines.shape == (1, 64, 96, 3)
    row = lines[0, 32, :, 0]
    assert row[30:33].min() > 0.4  # the dark line
    assert row[:20].max() == 0 and row[80:].max() == 0  # the page
    assert 0 < row[60] < row[31]  # the faint line shows, weaker
    light = 1 - drawing()  # a light line on dark is not a dark line: only its dark borders darken
    assert lineart_standard(light, 4.0, 8)[0, 32, 31, 0] == 0


def test_normal_map_of_a_flat_wall_faces_the_viewer_and_a_ramp_tilts_away_from_what_is_nearer() -> None:
    flat = normal_from_depth(torch.full((1, 16, 16, 3), 0.5))
    assert torch.allclose(flat, torch.tensor([0.5, 0.5, 1.0]).expand(1, 16, 16, 3), atol=1e-6)
    ramp = (
        torch.linspace(0.2, 1.0, 32).expand(1, 32, 32)[..., None].expand(1, 32, 32, 3)
    )  # nearer to the right
    n = normal_from_depth(ramp.contiguous(), strength=6.0)[0, 16, 16] * 2 - 1
    slope = 0.8 / 31 * 6.0  # depth per pixel times strength
    expected = torch.tensor([-slope, 0.0, 1.0]) / (1 + slope**2) ** 0.5
    assert torch.allclose(n, expected, atol=1e-5)
    floor = ramp.transpose(1, 2).contiguous()  # nearer downward: faces up (green above half)
    assert normal_from_depth(floor)[0, 16, 16, 1] > 0.55
    far = torch.zeros(1, 8, 8, 3)
    far[:, :, 4:] = 0.05  # a step in the background stays flat
    assert torch.allclose(normal_from_depth(far, background_threshold=0.1)[..., 2], torch.ones(1, 8, 8))


def write_depth_onnx(path: Path, fixed: tuple[int, int] | None = None) -> None:
    """A live stand-in depth estimator in Depth Anything's layout: input ``image`` [1, 3, H, W], output
    ``depth`` [1, H, W] = the mean of the normalised channels (brighter = nearer)."""
    import onnx
    from onnx import TensorProto, helper

    h, w = fixed if fixed else ("height", "width")
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image"], ["depth"], axes=[1], keepdims=0)],
        "depth",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info("depth", TensorProto.FLOAT, [1, h, w])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def depth_graph(model_name: str) -> dict:
    return {
        "img": {"class_type": "LoadImage", "inputs": {"image": "square.png"}},
        "depth": {
            "class_type": "DepthMapPreprocessor",
            "inputs": {"image": ["img", 0], "model_name": model_name, "resolution": 56},
        },
        "normal": {
            "class_type": "NormalMapFromDepth",
            "inputs": {"depth": ["depth", 0], "strength": 6.0, "bg_threshold": 0.1},
        },
    }


def test_depth_node_runs_the_users_onnx_model_and_normals_follow(engine: Engine) -> None:
    folder = engine.folders.models["depth"][0]
    write_depth_onnx(folder / "tiny_depth.onnx")
    img = np.full((60, 80, 3), 40, np.uint8)
    img[20:40, 30:50] = 230  # a bright (near) square
    Image.fromarray(img).save(engine.folders.input / "square.png")
    wf = depth_graph("tiny_depth.onnx")
    ex = engine.executor
    res = ex.run(wf, outputs=["normal"])
    assert res.ok, (res.failure, res.errors)
    plan = ex.plan(check(wf, ex.registry, outputs=["normal"], files=ex.folders).graph)
    depth = ex.cache.get(plan.signatures["depth"]).outputs[0]
    normal = ex.cache.get(plan.signatures["normal"]).outputs[0]
    assert depth.shape == (1, 60, 80, 3) and normal.shape == (1, 60, 80, 3)
    assert depth[0, 30, 40, 0] > 0.95 and depth[0, 5, 5, 0] < 0.05  # near white, far black
    assert torch.equal(normal, normal_from_depth(depth, 6.0, 0.1))
    # the square stands out: its left side faces left (red under half), its right side right
    assert normal[0, 30, 25:35, 0].min() < 0.4 and normal[0, 30, 45:55, 0].max() > 0.6


def test_depth_model_sizes_and_refusals(engine: Engine, tmp_path: Path) -> None:
    import onnxruntime as ort

    write_depth_onnx(tmp_path / "fixed.onnx", fixed=(28, 42))
    write_depth_onnx(tmp_path / "free.onnx")
    fixed = ort.InferenceSession(str(tmp_path / "fixed.onnx"), providers=["CPUExecutionProvider"])
    free = ort.InferenceSession(str(tmp_path / "free.onnx"), providers=["CPUExecutionProvider"])
    assert model_input_size(fixed, 640, 480, 518) == (42, 28)
    assert model_input_size(free, 640, 480, 518) == (686, 518)  # multiples of 14, shorter side 518
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(engine.folders.input / "square.png")
    for name, words in (
        ("depth_anything_v2_vitl.onnx", ["depth_anything_v2_vitl.onnx not found", "depth"]),
        ("depth_anything_v2_vitl.pth", ["PyTorch file", "ONNX"]),
    ):
        res = check(depth_graph(name), engine.executor.registry, outputs=["depth"], files=engine.folders)
        [err] = [e for e in res.errors if e.severity == "error"]
        assert (err.node, err.input) == ("depth", "model_name")
        assert all(w in err.message for w in words), err.message


@pytest.mark.parametrize("resolution", [64, 128])
def test_lineart_node_scales_to_its_resolution(engine: Engine, resolution: int) -> None:
    Image.fromarray((drawing()[0].numpy() * 255).astype(np.uint8)).save(engine.folders.input / "d.png")
    wf = {
        "img": {"class_type": "LoadImage", "inputs": {"image": "d.png"}},
        "lines": {
            "class_type": "LineartStandardPreprocessor",
            "inputs": {
                "image": ["img", 0],
                "guassian_sigma": 4.0,
                "intensity_threshold": 8,
                "resolution": resolution,
            },
        },
    }
    ex = engine.executor
    res = ex.run(wf, outputs=["lines"])
    assert res.ok, (res.failure, res.errors)
    out = ex.cache.get(
        ex.plan(check(wf, ex.registry, outputs=["lines"], files=ex.folders).graph).signatures["lines"]
    ).outputs[0]
    assert out.shape == (1, resolution, resolution * 3 // 2, 3) and out.max() > 0
