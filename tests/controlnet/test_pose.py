"""Pose pictures: the OpenPose skeleton drawn from known keypoints (limb and joint pixels where and in the
colours OpenPose puts them), MediaPipe's and COCO-WholeBody's keypoints mapped to OpenPose's 18, MediaPipe
on a real photo (scikit-image's public-domain astronaut, checked against RetinaFace's face box), and the
nodes' skip and error paths."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.engine.imaging import pose_mediapipe
from atelier.engine.imaging.pose import (
    BODY_COLOURS,
    BODY_LIMBS,
    HAND_BONES,
    HAND_JOINT_COLOUR,
    LIMB_SHADE,
    MEDIAPIPE_TO_OPENPOSE,
    Pose,
    draw_openpose,
    hand_bone_colour,
    mediapipe_to_openpose,
    output_size,
)
from atelier.engine.imaging.pose_dwpose import (
    coco_wholebody_to_openpose,
    load_dwpose,
    simcc_decode,
    yolox_people,
)
from atelier.engine.runtime import Engine
from atelier.engine.validate import check

W, H = 200, 300
#: a standing person, OpenPose order (x, y) in pixels of a 200x300 picture
STANDING = np.array(
    [
        (100, 40),  # nose
        (100, 80),  # neck
        (70, 80),  # right shoulder
        (60, 130),  # right elbow
        (55, 180),  # right wrist
        (130, 80),  # left shoulder
        (140, 130),
        (145, 180),
        (85, 170),  # right hip
        (85, 230),
        (85, 285),
        (115, 170),  # left hip
        (115, 230),
        (115, 285),
        (92, 32),  # right eye
        (108, 32),
        (84, 38),  # right ear
        (116, 38),
    ],
    dtype=np.float64,
)


def standing(missing: tuple[int, ...] = ()) -> Pose:
    body = STANDING / np.array([W, H])
    body[list(missing)] = np.nan
    return Pose(body)


def test_each_limb_is_drawn_in_its_colour_along_its_segment_and_joints_on_top() -> None:
    img = draw_openpose([standing()], W, H)
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    for i, (a, b) in enumerate(BODY_LIMBS):
        (xa, ya), (xb, yb) = STANDING[a], STANDING[b]
        length = math.hypot(xb - xa, yb - ya)
        if length < 24:  # short limbs (the face) are covered by their joints' discs
            continue
        for t in (0.35, 0.5, 0.65):  # points along the limb away from the joint discs
            x, y = round(xa + t * (xb - xa)), round(ya + t * (yb - ya))
            want = [int(c * LIMB_SHADE) for c in BODY_COLOURS[i]]
            assert img[y, x].tolist() == want, (i, t, img[y, x], want)
    for k, (x, y) in enumerate(STANDING):
        if k in (14, 15, 16, 17, 0):  # face joints overlap one another
            continue
        assert img[round(y), round(x)].tolist() == list(BODY_COLOURS[k]), k
    assert img[5, 5].tolist() == [0, 0, 0] and img[150, 100].tolist() == [0, 0, 0]  # black elsewhere
    assert draw_openpose([standing()], W, H, body=False).max() == 0


def test_a_missing_keypoint_takes_its_limbs_and_disc_away() -> None:
    full = draw_openpose([standing()], W, H)
    no_elbow = draw_openpose([standing(missing=(3,))], W, H)
    x, y = STANDING[3].round().astype(int)
    assert no_elbow[y, x].tolist() == [0, 0, 0] and full[y, x].tolist() != [0, 0, 0]
    mid_upper = ((STANDING[2] + STANDING[3]) / 2).round().astype(int)
    mid_fore = ((STANDING[3] + STANDING[4]) / 2).round().astype(int)
    assert no_elbow[mid_upper[1], mid_upper[0]].max() == 0 and no_elbow[mid_fore[1], mid_fore[0]].max() == 0
    other = ((STANDING[5] + STANDING[6]) / 2).round().astype(int)  # the other arm is untouched
    assert np.array_equal(no_elbow[other[1], other[0]], full[other[1], other[0]])


def test_hands_are_bones_in_hue_order_with_blue_joints() -> None:
    hand = np.zeros((21, 2))
    for f in range(5):  # five straight fingers fanning up from the wrist
        angle = math.radians(-150 + 30 * f)
        for j in range(1, 5):
            hand[4 * f + j] = (100 + 18 * j * math.cos(angle), 150 + 18 * j * math.sin(angle))
    hand[0] = (100, 150)
    pose = Pose(np.full((18, 2), np.nan), (hand / np.array([W, H]),))
    img = draw_openpose([pose], W, H)
    assert img[150, 100].tolist() == list(HAND_JOINT_COLOUR)
    for i, (a, b) in enumerate(HAND_BONES):
        if a == 0:
            continue
        x, y = ((hand[a] + hand[b]) / 2).round().astype(int)
        assert img[y, x].tolist() == list(hand_bone_colour(i)), i
    assert hand_bone_colour(0) == (255, 0, 0) and len(set(map(hand_bone_colour, range(20)))) == 20
    assert draw_openpose([pose], W, H, hands=False).max() == 0


def test_mediapipe_landmarks_map_to_openpose_order_with_the_neck_between_the_shoulders() -> None:
    rng = np.random.default_rng(0)
    lm = np.concatenate([rng.uniform(0.05, 0.95, (33, 3)), np.ones((33, 1))], axis=1)
    body = mediapipe_to_openpose(lm)
    assert np.allclose(body[2], lm[12, :2]) and np.allclose(body[5], lm[11, :2])  # the person's right: 12
    assert np.allclose(body[0], lm[0, :2]) and np.allclose(body[16], lm[8, :2])
    assert np.allclose(body[1], (lm[11, :2] + lm[12, :2]) / 2)
    for k, src in enumerate(MEDIAPIPE_TO_OPENPOSE):
        if src is not None:
            assert np.allclose(body[k], lm[src, :2])
    hidden = lm.copy()
    hidden[11, 3] = 0.1  # the left shoulder unseen: it and the neck are missing, the rest is not
    body = mediapipe_to_openpose(hidden)
    assert np.isnan(body[5]).all() and np.isnan(body[1]).all() and np.isfinite(body[2]).all()
    outside = lm.copy()
    outside[0, 0] = 1.3
    assert np.isnan(mediapipe_to_openpose(outside)[0]).all()
    with pytest.raises(ValueError, match="33 landmarks"):
        mediapipe_to_openpose(lm[:17])


def test_coco_wholebody_maps_to_openpose_and_hands() -> None:
    kps = np.arange(266, dtype=np.float64).reshape(133, 2)
    scores = np.ones(133)
    scores[9] = 0.1  # left wrist unsure
    body, (left, right) = coco_wholebody_to_openpose(kps, scores)
    assert np.allclose(body[2], kps[6]) and np.allclose(body[5], kps[5]) and np.allclose(body[14], kps[2])
    assert np.allclose(body[1], (kps[5] + kps[6]) / 2) and np.isnan(body[7]).all()
    assert np.allclose(left, kps[91:112]) and np.allclose(right, kps[112:133])


def test_yolox_rows_decode_to_boxes_and_simcc_to_keypoints() -> None:
    size = (64, 64)
    rows = sum((size[0] // s) * (size[1] // s) for s in (8, 16, 32))
    out = np.full((1, rows, 85), -5.0, dtype=np.float32)
    out[..., 4:] = 0.0
    # stride 16 starts after the 8x8 grid of stride 8; cell (x=1, y=2) of the 4x4 grid
    row = 64 + 2 * 4 + 1
    out[0, row, :6] = (0.5, 0.5, math.log(2.0), math.log(3.0), 0.9, 0.9)
    boxes = yolox_people(out, size, ratio=0.5)
    cx, cy, w, h = (1.5 * 16, 2.5 * 16, 32, 48)
    assert np.allclose(
        boxes, [[(cx - w / 2) / 0.5, (cy - h / 2) / 0.5, (cx + w / 2) / 0.5, (cy + h / 2) / 0.5]]
    )
    assert len(yolox_people(out * 0, size, ratio=1.0)) == 0
    sx, sy = np.zeros((2, 48)), np.zeros((2, 64))
    sx[0, 10], sy[0, 30], sx[1, 47], sy[1, 0] = 0.9, 0.8, 0.5, 0.7
    kps, scores = simcc_decode(sx, sy, np.array([50.0, 60.0]), np.array([24.0, 32.0]), (24, 32))
    # model pixel (5, 15) of a 24x32 crop of scale 24x32 centred at (50, 60) is picture pixel (43, 59)
    assert np.allclose(kps[0], [43.0, 59.0]) and np.allclose(scores, [0.8, 0.5])


def test_output_size_keeps_the_aspect_ratio() -> None:
    assert output_size(640, 480, 512) == (683, 512)
    assert output_size(300, 600, 256) == (256, 512)


def photo_of_a_person() -> np.ndarray:
    from skimage import data

    return data.astronaut()


needs_mediapipe = pytest.mark.skipif(
    not pose_mediapipe.mediapipe_available(),
    reason="MediaPipe is not installed (pip install 'atelier[pose]')",
)


@needs_mediapipe
def test_mediapipe_finds_the_astronaut_where_retinaface_finds_her_face() -> None:
    from atelier.engine.faces import retinaface

    photo = photo_of_a_person()
    [[pose]] = pose_mediapipe.estimate_poses([photo], hands=False)
    h, w = photo.shape[:2]
    px = pose.body * np.array([w, h])
    detector = retinaface.load(retinaface.weights_path(), None)  # type: ignore[arg-type]
    face = max(detector.detect(photo, 0.5), key=lambda f: f.score)
    x0, y0, x1, y1 = face.box
    for k in (0, 14, 15):  # nose and eyes inside the face box found by another model
        assert x0 <= px[k, 0] <= x1 and y0 <= px[k, 1] <= y1, (k, px[k], face.box)
    assert px[1, 1] > y1  # the neck below the face, the shoulders either side of it
    assert px[2, 0] < px[1, 0] < px[5, 0]  # she faces the camera: her right shoulder is on our left


@needs_mediapipe
def test_openpose_node_draws_the_photo_pose_and_skips_an_empty_picture(engine: Engine) -> None:
    Image.fromarray(photo_of_a_person()).save(engine.folders.input / "astronaut.png")
    Image.fromarray(np.zeros((80, 120, 3), np.uint8)).save(engine.folders.input / "empty.png")
    events: list[dict] = []
    node = {
        "class_type": "OpenposePreprocessor",
        "inputs": {
            "detect_hand": "disable",
            "detect_body": "enable",
            "detect_face": "disable",
            "resolution": 256,
        },
    }
    wf = {"img": {"class_type": "LoadImage", "inputs": {"image": "astronaut.png"}}, "pose": node}
    node["inputs"]["image"] = ["img", 0]
    res = engine.executor.run(wf, outputs=["pose"], on_event=events.append)
    assert res.ok, (res.failure, res.errors)
    ex = engine.executor
    plan = ex.plan(check(wf, ex.registry, outputs=["pose"], files=ex.folders).graph)
    picture = ex.cache.get(plan.signatures["pose"]).outputs[0]
    assert tuple(picture.shape) == (1, 256, 256, 3)
    [[pose]] = pose_mediapipe.estimate_poses([photo_of_a_person()], hands=False)
    assert torch.equal(picture[0], torch.from_numpy(draw_openpose([pose], 256, 256)).float() / 255)
    wf["img"]["inputs"]["image"] = "empty.png"
    events.clear()
    res = engine.executor.run(wf, outputs=["pose"], on_event=events.append)
    assert res.ok
    picture = ex.cache.get(
        ex.plan(check(wf, ex.registry, outputs=["pose"], files=ex.folders).graph).signatures["pose"]
    ).outputs[0]
    assert tuple(picture.shape) == (1, 256, 384, 3) and picture.max() == 0
    assert "no person found" in str(events)


@needs_mediapipe
def test_the_pose_from_a_photo_workflow_runs_headless(engine: Engine) -> None:
    import json

    Image.fromarray(photo_of_a_person()).save(engine.folders.input / "astronaut.png")
    wf = json.loads(
        (Path(__file__).resolve().parents[2] / "workflows" / "portrait_pose_photo.json").read_text()
    )
    overrides = {
        "checkpoint": "tiny15.safetensors",
        "controlnet": "cn15.safetensors",
        "photo": "astronaut.png",
        "width": 64,
        "height": 96,
        "steps": 2,
    }
    events: list = []
    res = engine.executor.run(wf, overrides=overrides, on_event=events.append)
    assert res.ok, (res.failure, res.errors)
    ref = res.outputs["save"]["images"][0]
    picture = Image.open(engine.folders.output / ref["subfolder"] / ref["filename"])
    assert picture.size == (64, 96)
    assert res.outputs["pose_preview"]["images"]  # the estimated skeleton is shown


def test_openpose_node_without_mediapipe_says_how_to_install_it(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing() -> None:
        raise pose_mediapipe.MediaPipeMissing(pose_mediapipe.INSTALL_HINT)

    monkeypatch.setattr(pose_mediapipe, "_solutions", missing)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(engine.folders.input / "black.png")
    wf = {
        "img": {"class_type": "LoadImage", "inputs": {"image": "black.png"}},
        "pose": {"class_type": "OpenposePreprocessor", "inputs": {"image": ["img", 0]}},
    }
    res = engine.executor.run(wf, outputs=["pose"])
    assert not res.ok and res.failure is not None
    assert res.failure.node == "pose" and "pip install 'atelier[pose]'" in res.failure.message


def test_dwpose_without_its_files_is_refused_at_validation_naming_them(engine: Engine) -> None:
    wf = {
        "img": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
        "pose": {"class_type": "DWPreprocessor", "inputs": {"image": ["img", 0]}},
    }
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(engine.folders.input / "x.png")
    res = check(wf, engine.executor.registry, outputs=["pose"], files=engine.folders)
    found = {(e.node, e.input): e.message for e in res.errors if e.severity == "error"}
    assert set(found) == {("pose", "bbox_detector"), ("pose", "pose_estimator")}
    assert "yolox_l.onnx not found" in found[("pose", "bbox_detector")]
    assert "dw-ll_ucoco_384.onnx not found" in found[("pose", "pose_estimator")]
    assert "pose" in found[("pose", "pose_estimator")]  # names the folder it looked in


def write_live_onnx(
    path: Path, input_name: str, input_shape: list[int], outputs: dict[str, np.ndarray]
) -> None:
    """An ONNX model in a real file's input/output layout: each output is a constant plus the input's mean
    times small random weights (live: it depends on the picture, but not enough to move an argmax)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("ReduceMean", [input_name], ["m"], keepdims=0)]
    inits = []
    outs = []
    for name, const in outputs.items():
        weights = (rng.standard_normal(const.shape) * 1e-6).astype(np.float32)
        inits += [
            numpy_helper.from_array(const.astype(np.float32), f"{name}_c"),
            numpy_helper.from_array(weights, f"{name}_w"),
        ]
        nodes += [
            helper.make_node("Mul", ["m", f"{name}_w"], [f"{name}_mw"]),
            helper.make_node("Add", [f"{name}_c", f"{name}_mw"], [name]),
        ]
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(const.shape)))
    graph = helper.make_graph(
        nodes,
        "live",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)],
        outs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def test_dwpose_node_runs_the_users_onnx_files(engine: Engine) -> None:
    folder = engine.folders.models["pose"][0]
    det = np.full((1, 84, 85), -5.0, dtype=np.float32)  # a 64x64 YOLOX: 8x8 + 4x4 + 2x2 rows
    det[..., 4:] = 0.0
    det[0, 64 + 2 * 4 + 1, :6] = (
        0.5,
        0.5,
        math.log(2.0),
        math.log(3.0),
        0.9,
        0.9,
    )  # a person at 8..40, 16..64
    write_live_onnx(folder / "yolox_l.onnx", "images", [1, 3, 64, 64], {"dets": det})
    rng = np.random.default_rng(3)
    xs, ys = rng.integers(0, 48, 133), rng.integers(0, 64, 133)
    sx, sy = np.zeros((1, 133, 48)), np.zeros((1, 133, 64))
    sx[0, np.arange(133), xs] = 1.0
    sy[0, np.arange(133), ys] = 1.0
    sy[0, 7, ys[7]] = 0.1  # the left elbow unsure: left out
    write_live_onnx(folder / "dw-ll_ucoco_384.onnx", "input", [1, 3, 32, 24], {"simcc_x": sx, "simcc_y": sy})
    photo = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(photo).save(engine.folders.input / "people.png")
    wf = {
        "img": {"class_type": "LoadImage", "inputs": {"image": "people.png"}},
        "pose": {
            "class_type": "DWPreprocessor",
            "inputs": {"image": ["img", 0], "resolution": 64, "detect_face": "disable"},
        },
    }
    ex = engine.executor
    res = ex.run(wf, outputs=["pose"])
    assert res.ok, (res.failure, res.errors)
    got = ex.cache.get(
        ex.plan(check(wf, ex.registry, outputs=["pose"], files=ex.folders).graph).signatures["pose"]
    ).outputs[0]
    # by hand: the box 8..40 x 16..64 grown by 1.25 to 40x60, widened to the model's 3:4, is 45x60 at (24, 40);
    # model pixel (x, y) of the 24x32 crop (SimCC index / 2) is picture pixel (x/24*45 + 1.5, y/32*60 + 10)
    kps = np.stack([xs / 2 / 24 * 45 + 1.5, ys / 2 / 32 * 60 + 10], axis=1) / 64
    scores = np.ones(133)
    scores[7] = 0.1
    body, hands = coco_wholebody_to_openpose(kps, scores)
    assert np.isnan(body[6]).all()  # OpenPose's left elbow is COCO's 7
    [found] = load_dwpose(engine.folders, engine.models, "yolox_l.onnx", "dw-ll_ucoco_384.onnx").poses(photo)
    assert np.allclose(found.body, body, atol=0.01 / 64, equal_nan=True)
    assert all(np.allclose(a, b, atol=0.01 / 64) for a, b in zip(found.hands, hands, strict=True))
    want = torch.from_numpy(draw_openpose([Pose(body, hands)], 64, 64)).float() / 255
    assert got.shape == (1, 64, 64, 3)
    assert (got[0] != want).any(
        -1
    ).float().mean() < 0.01  # the same skeleton, but for rounding at half pixels
