"""FaceDetailer: find the faces and re-denoise each at a working size with its own prompt, in one node.

Impact Pack's name and main inputs (guide_size, max_size, the sampler's, denoise, feather, bbox_threshold,
bbox_dilation, bbox_crop_factor, drop_size), with the detector built in (``detector``), an optional face
prompt (``face_prompt`` text, or ``face_positive`` conditioning) and optional ready ``faces``. The pass
itself is ``engine/faces/detailer.py``. An image without a face passes through with a message in the
node's UI output (``{"text": [...]}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from atelier.engine import folders as _F
from atelier.engine.faces import detect
from atelier.engine.faces.detailer import DetailSettings, detail_faces, group_by_size
from atelier.engine.faces.detections import Faces
from atelier.engine.faces.detector import DetectorUnavailable
from atelier.engine.faces.masks import MASK_SHAPES, combined_mask
from atelier.engine.limits import Estimate, Extent
from atelier.engine.models import estimates as X
from atelier.engine.models.handles import ClipHandle, ModelHandle, VaeHandle
from atelier.engine.models.sockets import CLIP, CONDITIONING, FACES, IMAGE, MASK, MODEL, VAE
from atelier.engine.node import Boolean, Choice, Context, Float, Int, NodeResult, Output, Socket, String
from atelier.engine.sampling.conditioning import CondEntry, Conditioning
from atelier.engine.sampling.runner import SAMPLER_SETTINGS, SEED

MAX_RESOLUTION = 16384


class FaceDetailer(detect.DetectorNode):
    """Find faces and re-paint each one larger: the crop region (face box x bbox_crop_factor) is scaled
    so the face is about guide_size pixels (at most max_size), re-denoised at denoise with the face prompt
    (or the main one) inside the face mask, and pasted back through a feathered mask. Faces of one working
    size share a batch. Everything outside the crop regions stays exactly as it was."""

    category = "image/faces"
    inputs = (
        Socket("image", IMAGE),
        Socket("model", MODEL),
        Socket("clip", CLIP),
        Socket("vae", VAE),
        Int("guide_size", 512, min=64, max=MAX_RESOLUTION, step=8, description="face size to paint at"),
        Choice("guide_size_for", ["bbox", "crop_region"], "bbox"),
        Int("max_size", 1024, min=64, max=MAX_RESOLUTION, step=8, description="longest side painted at"),
        SEED,
        *SAMPLER_SETTINGS,
        Socket("positive", CONDITIONING),
        Socket("negative", CONDITIONING),
        Float("denoise", 0.5, min=0.0001, max=1.0, step=0.01),
        Int("feather", 5, min=0, max=100),
        Boolean("noise_mask", True, description="denoise only inside the face mask"),
        Float("bbox_threshold", 0.5, min=0.0, max=1.0, step=0.01),
        Int("bbox_dilation", 10, min=-512, max=512),
        Float("bbox_crop_factor", 3.0, min=1.0, max=10.0, step=0.1),
        Int("drop_size", 10, min=1, max=MAX_RESOLUTION),
        Choice("detector", detect.detector_choices, "retinaface"),
        Choice("mask_shape", MASK_SHAPES, "box"),
        String("face_prompt", "", multiline=True, description="prompt for the faces; empty: the main one"),
        Socket(
            "faces", FACES, optional=True, description="ready detections (the bbox_* inputs are then unused)"
        ),
        Socket("face_positive", CONDITIONING, optional=True, description="conditioning for the faces"),
    )
    outputs = (Output(IMAGE, "image"), Output(MASK, "mask"), Output(FACES, "faces"))

    @classmethod
    def estimate(
        cls, files: _F.Folders, upstream: Mapping[str, Extent], steps: int | None = None, **_: Any
    ) -> Estimate | None:
        image = upstream.get("image")
        return Estimate(X.steps_measures(steps), {0: image} if image is not None else {})

    def run(
        self,
        ctx: Context,
        image: torch.Tensor,
        model: ModelHandle,
        clip: ClipHandle,
        vae: VaeHandle,
        guide_size: int,
        guide_size_for: str,
        max_size: int,
        seed: int,
        steps: int,
        cfg: float,
        sampler_name: str,
        scheduler: str,
        positive: Conditioning,
        negative: Conditioning,
        denoise: float,
        feather: int,
        noise_mask: bool,
        bbox_threshold: float,
        bbox_dilation: int,
        bbox_crop_factor: float,
        drop_size: int,
        detector: str,
        mask_shape: str,
        face_prompt: str,
        faces: Faces | None = None,
        face_positive: Conditioning | None = None,
    ) -> NodeResult:
        if image.dim() != 4 or image.shape[-1] != 3:
            raise ValueError(f"FaceDetailer needs an IMAGE batch [B, H, W, 3]; got shape {list(image.shape)}")
        if faces is None:
            try:
                found_by = detect.load_detector(ctx.files, ctx.models, detector)
            except DetectorUnavailable as exc:
                raise ValueError(f"face detector {detector!r}: {exc}") from exc
            faces = detect.find_faces(
                image,
                found_by,
                threshold=bbox_threshold,
                dilation=bbox_dilation,
                crop_factor=bbox_crop_factor,
                drop_size=drop_size,
                mask_shape=mask_shape,  # type: ignore[arg-type]
                device=ctx.device,
            )
        else:
            faces.check_image(image, "image given with these faces")
        if not len(faces):
            images = "the image" if faces.batch_size == 1 else f"any of the {faces.batch_size} images"
            text = f"no face found in {images}: passed through unchanged"
            mask = torch.zeros(image.shape[:3], device=image.device)
            return NodeResult(outputs=(image, mask, faces), ui={"text": [text], "faces": [0]})

        if face_positive is not None:
            face_cond = face_positive
        elif face_prompt.strip():
            cond, pooled = clip.encode(face_prompt)
            face_cond = [CondEntry(cond, pooled)]
        else:
            face_cond = positive
        settings = DetailSettings(
            guide_size=guide_size,
            guide_size_for=guide_size_for,  # type: ignore[arg-type]
            max_size=max_size,
            feather=feather,
            noise_mask=noise_mask,
            seed=seed,
            steps=steps,
            cfg=cfg,
            sampler_name=sampler_name,
            scheduler=scheduler,
            denoise=denoise,
        )
        result = detail_faces(ctx, image, faces, model, vae, face_cond, negative, settings)
        groups = group_by_size(faces, guide_size, settings.guide_size_for, max_size)
        sizes = ", ".join(f"{len(g)} at {w}x{h}" for (w, h), g in groups)
        text = f"detailed {len(faces)} face(s) ({sizes})"
        mask = combined_mask(faces, image.device, feather_radius=0)
        return NodeResult(outputs=(result, mask, faces), ui={"text": [text], "faces": [len(faces)]})
