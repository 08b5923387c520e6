"""Face nodes: detect faces (FACES), their combined mask, crop them out and paste them back, draw them.

FACES (``engine/faces/detections.py``) is consumed downstream like Impact Pack's SEGS. The pieces here
are for people who wire their own detail pass (CropFaces -> VAEEncode -> SetLatentNoiseMask -> KSampler
-> VAEDecode -> PasteFaces); FaceDetailer does it all in one node. An image without a face passes through
every node unchanged, with a message in the node's UI output (``{"text": [...]}``, on ``node_finished``).
"""

from __future__ import annotations

import torch

from atelier.engine.faces import detect
from atelier.engine.faces import masks as fm
from atelier.engine.faces.boxes import region_to_aspect
from atelier.engine.faces.compose import crop, paste_, resize_image
from atelier.engine.faces.detections import Faces
from atelier.engine.faces.detector import DetectorUnavailable
from atelier.engine.faces.draw import draw_faces
from atelier.engine.models.sockets import FACES, IMAGE, MASK
from atelier.engine.node import Choice, Context, Float, Int, Node, NodeResult, Output, Socket

MAX_SIZE = 16384


def no_face_message(faces: Faces) -> str:
    images = "the image" if faces.batch_size == 1 else f"any of the {faces.batch_size} images"
    return f"no face found in {images}: passed through unchanged"


class FaceDetect(detect.DetectorNode):
    """Find faces: box, score, five landmarks (RetinaFace, YuNet, YOLO pose), a crop region grown by
    crop_factor and a mask grown by dilation. Built in with nothing to download: 'retinaface' and 'haar'
    (OpenCV's frontal-face cascade); YOLO or YuNet .onnx files in models/face_detectors are listed too."""

    category = "image/faces"
    inputs = (
        Socket("image", IMAGE),
        Choice("detector", detect.detector_choices, "retinaface"),
        Float("threshold", 0.5, min=0.0, max=1.0, step=0.01, description="minimum detection score"),
        Int("dilation", 10, min=-512, max=512, description="grow (or shrink) each face mask by pixels"),
        Float(
            "crop_factor", 3.0, min=1.0, max=10.0, step=0.1, description="crop region size / face box size"
        ),
        Int("drop_size", 10, min=1, max=MAX_SIZE, description="ignore faces smaller than this (pixels)"),
        Choice("mask_shape", fm.MASK_SHAPES, "box"),
    )
    outputs = (Output(FACES),)

    def run(
        self,
        ctx: Context,
        image: torch.Tensor,
        detector: str,
        threshold: float,
        dilation: int,
        crop_factor: float,
        drop_size: int,
        mask_shape: str,
    ) -> NodeResult:
        try:
            model = detect.load_detector(ctx.files, ctx.models, detector)
        except DetectorUnavailable as exc:
            raise ValueError(f"face detector {detector!r}: {exc}") from exc
        faces = detect.find_faces(
            image,
            model,
            threshold=threshold,
            dilation=dilation,
            crop_factor=crop_factor,
            drop_size=drop_size,
            mask_shape=mask_shape,  # type: ignore[arg-type]
            device=ctx.device,
            on_image=ctx.progress,
        )
        text = f"{len(faces)} face(s) found by {detector}" if len(faces) else no_face_message(faces)
        return NodeResult(outputs=(faces,), ui={"text": [text], "faces": [len(faces)]})


class FacesToMask(Node):
    """The faces' masks as one MASK per image (0 where there is no face), optionally feathered."""

    category = "image/faces"
    inputs = (Socket("faces", FACES), Int("feather", 0, min=0, max=256))
    outputs = (Output(MASK),)

    def run(self, ctx: Context, faces: Faces, feather: int) -> torch.Tensor:
        return fm.combined_mask(faces, ctx.device, feather_radius=feather)


class CropFaces(Node):
    """Cut every face's crop region out, grown to the aspect of width x height and scaled to that size,
    with its mask: a batch for your own detail pass. Paste the results back with PasteFaces and the FACES
    output here (its crop regions are the grown ones). With no face, one scaled copy of the first image
    and an empty mask come out, and PasteFaces passes the image through."""

    category = "image/faces"
    inputs = (
        Socket("image", IMAGE),
        Socket("faces", FACES),
        Int("width", 512, min=8, max=MAX_SIZE, step=8),
        Int("height", 512, min=8, max=MAX_SIZE, step=8),
    )
    outputs = (Output(IMAGE, "crops"), Output(MASK, "masks"), Output(FACES, "faces"))

    def run(self, ctx: Context, image: torch.Tensor, faces: Faces, width: int, height: int) -> NodeResult:
        faces.check_image(image)
        if not len(faces):
            empty = torch.zeros(1, height, width, device=image.device)
            outputs = (resize_image(image[:1], width, height), empty, faces)
            return NodeResult(outputs=outputs, ui={"text": [no_face_message(faces)]})
        moved = []
        crops, masks = [], []
        for d in faces:
            region = region_to_aspect(d.crop, width / height, faces.width, faces.height)
            moved.append(d.with_crop(region, fm.move_mask(d.mask, d.crop, region)))
            crops.append(resize_image(crop(image, d.image_index, region), width, height))
            masks.append(fm.resize_mask(moved[-1].mask.to(image.device), width, height))
        out_faces = faces.with_detections(tuple(moved))
        return NodeResult(outputs=(torch.cat(crops), torch.stack(masks), out_faces), ui=None)


class PasteFaces(Node):
    """Paste one crop per face back into the image (each scaled to its crop region), through the face's
    mask feathered by up to feather pixels. Pixels outside the masks stay exactly as they were."""

    category = "image/faces"
    inputs = (
        Socket("image", IMAGE),
        Socket("faces", FACES),
        Socket("crops", IMAGE),
        Int("feather", 5, min=0, max=256),
    )
    outputs = (Output(IMAGE),)

    def run(
        self, ctx: Context, image: torch.Tensor, faces: Faces, crops: torch.Tensor, feather: int
    ) -> NodeResult:
        faces.check_image(image)
        if not len(faces):
            return NodeResult(outputs=(image,), ui={"text": [no_face_message(faces)]})
        if crops.shape[0] != len(faces):
            raise ValueError(
                f"PasteFaces got {crops.shape[0]} crop(s) for {len(faces)} face(s); they must match"
            )
        out = image.clone()
        for k, d in enumerate(faces):
            cw, ch = d.crop_size
            mask = _feathered(d.mask, d.crop, faces, feather)
            paste_(out, d.image_index, d.crop, resize_image(crops[k : k + 1], cw, ch), mask)
        return NodeResult(outputs=(out,), ui=None)


def _feathered(mask: torch.Tensor, region: tuple[int, int, int, int], faces: Faces, px: int) -> torch.Tensor:
    x0, y0, x1, y1 = region
    r = fm.radius_for((x1 - x0, y1 - y0), px)
    return fm.feather(mask, r, replicate=fm.border_sides(region, faces.width, faces.height))


class DrawFaces(Node):
    """Draw the faces for a preview: boxes in red, crop regions in blue, landmarks in green."""

    display_name = "Draw Faces (preview)"
    category = "image/faces"
    inputs = (Socket("image", IMAGE), Socket("faces", FACES), Int("thickness", 0, min=0, max=64))
    outputs = (Output(IMAGE),)

    def run(self, ctx: Context, image: torch.Tensor, faces: Faces, thickness: int) -> torch.Tensor:
        return draw_faces(image, faces, thickness=thickness)
