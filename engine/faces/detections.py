"""FACES: what a face detector found in an IMAGE batch, consumed downstream like Impact Pack's SEGS.

A :class:`Faces` value is immutable. It holds the size of the images it was found in and one
:class:`FaceDetection` per face: which image of the batch, the detector's box and score, the five
landmarks where the detector gives them, the crop region (the box grown by the crop factor and kept
inside the image) and the face's mask inside that crop region (0..1, on the compute device).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

from torch import Tensor

#: The five landmarks in the order RetinaFace and YuNet give them; "left" is the image's left (smaller x).
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels (x1, y1 exclusive)
Region = tuple[int, int, int, int]  # x0, y0, x1, y1 in whole pixels, inside the image
Point = tuple[float, float]


@dataclass(frozen=True, eq=False)
class FaceDetection:
    """One face: ``box`` as the detector found it, ``crop`` the region a detail pass works on, ``mask``
    ``[crop_h, crop_w]`` where the face is inside ``crop`` (the box grown by the dilation, as a box or an
    ellipse), ``landmarks`` the five points of :data:`LANDMARK_NAMES` or ``()`` when the detector gives none."""

    image_index: int
    box: Box
    score: float
    crop: Region
    mask: Tensor
    landmarks: tuple[Point, ...] = ()
    label: str = "face"

    def __post_init__(self) -> None:
        x0, y0, x1, y1 = self.crop
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"face crop region {self.crop} is empty")
        if tuple(self.mask.shape) != (y1 - y0, x1 - x0):
            raise ValueError(
                f"face mask {tuple(self.mask.shape)} does not match its crop region {self.crop} "
                f"({y1 - y0}x{x1 - x0})"
            )
        if self.landmarks and len(self.landmarks) != len(LANDMARK_NAMES):
            raise ValueError(f"a face has {len(LANDMARK_NAMES)} landmarks or none, not {len(self.landmarks)}")

    @property
    def box_size(self) -> tuple[float, float]:
        """(width, height) of the detector's box."""
        return self.box[2] - self.box[0], self.box[3] - self.box[1]

    @property
    def crop_size(self) -> tuple[int, int]:
        """(width, height) of the crop region."""
        return self.crop[2] - self.crop[0], self.crop[3] - self.crop[1]

    def with_crop(self, crop: Region, mask: Tensor) -> FaceDetection:
        return replace(self, crop=crop, mask=mask)


@dataclass(frozen=True, eq=False)
class Faces:
    """The faces found in an IMAGE batch of ``batch_size`` images of ``width`` x ``height`` pixels."""

    width: int
    height: int
    batch_size: int
    detections: tuple[FaceDetection, ...] = ()
    detector: str = ""

    def __post_init__(self) -> None:
        for d in self.detections:
            if not 0 <= d.image_index < self.batch_size:
                raise ValueError(f"face of image {d.image_index} in a batch of {self.batch_size}")
            x0, y0, x1, y1 = d.crop
            if x0 < 0 or y0 < 0 or x1 > self.width or y1 > self.height:
                raise ValueError(
                    f"face crop region {d.crop} reaches outside the {self.width}x{self.height} image"
                )

    def __len__(self) -> int:
        return len(self.detections)

    def __iter__(self) -> Iterator[FaceDetection]:
        return iter(self.detections)

    def in_image(self, index: int) -> tuple[FaceDetection, ...]:
        return tuple(d for d in self.detections if d.image_index == index)

    def with_detections(self, detections: tuple[FaceDetection, ...]) -> Faces:
        return replace(self, detections=tuple(detections))

    def check_image(self, image: Tensor, what: str = "image") -> None:
        """Raise a clear error when ``image`` [B,H,W,C] is not the batch these faces were found in."""
        b, h, w = int(image.shape[0]), int(image.shape[1]), int(image.shape[2])
        if (h, w) != (self.height, self.width) or b != self.batch_size:
            raise ValueError(
                f"the faces were found in {self.batch_size} image(s) of {self.width}x{self.height}, "
                f"but the {what} is {b} image(s) of {w}x{h}"
            )
