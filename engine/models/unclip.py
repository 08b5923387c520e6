"""Stable unCLIP (SD2.1 unCLIP H / L): a UNet conditioned on a CLIP image embedding besides the prompt.

A Stable unCLIP checkpoint (``sd21-unclip-h.ckpt``, ``sd21-unclip-l.ckpt``) is an SD2.x checkpoint with three
additions, all found from its keys:

* the UNet's ``label_emb``: a projection of ``[noised image embedding, embedding of its noise level]``
  (``2 * embed_dim`` wide) added to the time embedding; built as diffusers' ``class_embed_type="projection"``
  (``derive.py``);
* ``noise_augmentor.*``: the schedule (``betas``, ``alphas_cumprod``, ... of a ``squaredcos_cap_v2``
  schedule; its length is the max noise level) of the noise added to the image embedding, and optionally
  the embedding statistics ``data_mean`` / ``data_std`` (the released files have none: identity);
* ``embedder.model.visual.*``: the CLIP vision tower (OpenCLIP ViT-H/14 or OpenAI ViT-L/14) in the
  open_clip layout, read into transformers' ``CLIPVisionModelWithProjection`` (``open_clip_vision.py``).

As in ComfyUI, unCLIPConditioning attaches images (:class:`UnclipImage`) to conditioning entries; at each
network call the model's :class:`UnclipConditioner` turns each entry's images into the UNet's
``class_labels``: each image embedding is normalised, noised to the level ``noise_augmentation`` selects
(``round((max_level - 1) * noise_augmentation)``) with a CPU generator seeded ``seed - 10`` (the job's seed),
concatenated with the sinusoidal embedding of its level and multiplied by its strength; several images are
summed and their embedding part noised again at level 0.05 (ComfyUI draws that second noise unseeded; here
it is seeded ``seed - 11`` so that a job repeats). An entry without images gives zeros, as ComfyUI does,
so strength 0 is the model without image bit for bit. A plain model's calls refuse entries that carry
images (:func:`refuse_unclip`), naming the node that attached them and the model's file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from atelier.engine.model_loader import LoadOptions
from atelier.engine.sampling.guidance import ApplyModel, ModelCall

from .errors import CheckpointError
from .files import TensorIndex, open_single_file
from .info import CheckpointInfo, UnclipInfo
from .open_clip_vision import clip_vision_from_state, vision_from_original

__all__ = [
    "EMBEDDER_PREFIX",
    "MERGE_NOISE_AUGMENTATION",
    "NOISE_AUGMENTOR_PREFIX",
    "UNCLIP_KEY",
    "NoiseAugmentor",
    "UnclipConditioner",
    "UnclipError",
    "UnclipImage",
    "cosine_noise_schedule",
    "detect_unclip",
    "load_noise_augmentor",
    "refuse_unclip",
    "unclip_adm",
    "unclip_clip_vision_loader",
    "unclip_wrappers",
    "with_unclip_image",
]

EMBEDDER_PREFIX = "embedder.model.visual."
NOISE_AUGMENTOR_PREFIX = "noise_augmentor."
#: where a conditioning entry carries its unCLIP images (``CondEntry.extra``), ComfyUI's name
UNCLIP_KEY = "unclip_conditioning"
#: the noise level (as a fraction) at which several summed image embeddings are noised again (ComfyUI's)
MERGE_NOISE_AUGMENTATION = 0.05
#: the image embedding's noise is seeded with the job's seed minus this (ComfyUI's)
SEED_OFFSET = 10
#: noise levels of the released models' augmentor when a file does not say
DEFAULT_NOISE_LEVELS = 1000


class UnclipError(ValueError):
    """unCLIP conditioning that does not fit the model it is sampled with (the message names the node
    that attached the image and the model's file)."""


def detect_unclip(index: TensorIndex, unet_config: dict[str, Any]) -> UnclipInfo | None:
    """The unCLIP parts of an SD2 checkpoint whose UNet takes an image embedding (``label_emb``), else
    None. Raises ``CheckpointError`` for parts that do not fit together."""
    if unet_config.get("class_embed_type") != "projection":
        return None
    adm = int(unet_config["projection_class_embeddings_input_dim"])
    embed_dim, odd = divmod(adm, 2)
    if odd:
        raise CheckpointError(
            index.path,
            f"UNet image-embedding input {adm} is not an embedding and its noise level's (2 x width)",
        )
    betas = NOISE_AUGMENTOR_PREFIX + "betas"
    levels = int(index.shape(betas)[0]) if betas in index else DEFAULT_NOISE_LEVELS
    stats = all(NOISE_AUGMENTOR_PREFIX + k in index for k in ("data_mean", "data_std"))
    embedder: str | None = None
    if EMBEDDER_PREFIX + "conv1.weight" in index:
        embedder = EMBEDDER_PREFIX
        proj = EMBEDDER_PREFIX + "proj"
        width = int(index.shape(proj)[1]) if proj in index else None
        if width != embed_dim:
            raise CheckpointError(
                index.path,
                f"unCLIP embedder makes {width}-wide image embeddings, the UNet takes {embed_dim}-wide ones",
            )
    return UnclipInfo(embed_dim=embed_dim, noise_levels=levels, has_stats=stats, embedder_prefix=embedder)


def cosine_betas(levels: int) -> Tensor:
    """The betas of the ``squaredcos_cap_v2`` schedule (from the cosine alpha-bar, capped at 0.999), in
    float64, as the reference code's CLIPEmbeddingNoiseAugmentation makes them."""

    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    return torch.tensor(
        [min(1.0 - alpha_bar((i + 1) / levels) / alpha_bar(i / levels), 0.999) for i in range(levels)],
        dtype=torch.float64,
    )


def cosine_noise_schedule(levels: int) -> tuple[Tensor, Tensor]:
    """``sqrt(alphas_cumprod)`` and ``sqrt(1 - alphas_cumprod)`` of :func:`cosine_betas`, computed in
    float64 and kept as float32 like the reference code's buffers."""
    cumprod = torch.cumprod(1.0 - cosine_betas(levels), dim=0)
    return cumprod.sqrt().float(), (1.0 - cumprod).sqrt().float()


@dataclass(frozen=True, eq=False)
class NoiseAugmentor:
    """The noise an unCLIP model's image embedding gets: statistics ([1, D]) and schedule ([levels]), kept
    on the CPU (a few vectors; the result moves to the model's device)."""

    mean: Tensor
    std: Tensor
    sqrt_alphas_cumprod: Tensor
    sqrt_one_minus_alphas_cumprod: Tensor

    @property
    def embed_dim(self) -> int:
        return int(self.mean.shape[-1])

    @property
    def max_noise_level(self) -> int:
        return int(self.sqrt_alphas_cumprod.shape[0])

    def level(self, noise_augmentation: float) -> int:
        """The noise level a fraction 0..1 selects (ComfyUI's rounding)."""
        return round((self.max_noise_level - 1) * float(noise_augmentation))

    def augment(self, embeds: Tensor, level: int, seed: int) -> Tensor:
        """``[noised embeds, level embedding]`` ([N, 2D]) for embeds [N, D]: normalised, noised at
        ``level`` with noise from a CPU generator seeded ``seed``, unnormalised."""
        x = embeds.detach().to("cpu", torch.float32)
        x = (x - self.mean) / self.std
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float32)
        z = self.sqrt_alphas_cumprod[level] * x + self.sqrt_one_minus_alphas_cumprod[level] * noise
        z = z * self.std + self.mean
        from atelier.engine.models.libraries import get_timestep_embedding  # with a model, not at start-up

        levels = torch.full((x.shape[0],), level, dtype=torch.long)
        level_emb = get_timestep_embedding(
            levels, self.embed_dim, flip_sin_to_cos=True, downscale_freq_shift=0
        )
        return torch.cat([z, level_emb.float()], dim=1)


def load_noise_augmentor(index: TensorIndex, info: UnclipInfo) -> NoiseAugmentor:
    """The noise augmentor of a detected unCLIP checkpoint: the schedule's length from the file, the
    statistics from the file when it has them (else mean 0, deviation 1, as the released models use)."""
    d = info.embed_dim
    mean, std = torch.zeros(1, d), torch.ones(1, d)
    if info.has_stats:
        mean = index.read(NOISE_AUGMENTOR_PREFIX + "data_mean").float().reshape(1, -1)
        std = index.read(NOISE_AUGMENTOR_PREFIX + "data_std").float().reshape(1, -1)
        if mean.shape[1] != d or std.shape[1] != d:
            raise CheckpointError(
                index.path, f"noise_augmentor statistics are {mean.shape[1]} wide, the embedding {d}"
            )
    sqrt_ac, sqrt_1m = cosine_noise_schedule(info.noise_levels)
    return NoiseAugmentor(mean, std, sqrt_ac, sqrt_1m)


@dataclass(frozen=True, eq=False)
class UnclipImage:
    """One unCLIPConditioning on an entry: image embeddings [N, D] (each image adds up), strength, noise
    augmentation 0..1, and the node that attached it (``origin``, for errors)."""

    embeds: Tensor
    strength: float
    noise_augmentation: float
    origin: str = ""


def with_unclip_image(entry: Any, image: UnclipImage) -> Any:
    """A conditioning entry carrying ``image`` after the unCLIP images it already had."""
    return entry.with_extra(**{UNCLIP_KEY: (*entry.extra.get(UNCLIP_KEY, ()), image)})


def unclip_adm(
    images: Sequence[UnclipImage],
    augmentor: NoiseAugmentor,
    seed: int,
    merge_noise_augmentation: float = MERGE_NOISE_AUGMENTATION,
    name: str = "",
) -> Tensor:
    """The UNet's image-embedding input ([1, 2D], CPU) for an entry's unCLIP images: zeros without any.
    ``name`` is the model's file, for errors."""
    d = augmentor.embed_dim
    parts: list[Tensor] = []
    for image in images:
        embeds = image.embeds.reshape(-1, image.embeds.shape[-1])
        if embeds.shape[-1] != d:
            raise UnclipError(
                f"{image.origin}: the image embedding is {embeds.shape[-1]} wide, the unCLIP model {name!r} "
                f"takes {d}-wide ones (encode with the CLIP_VISION of its own unCLIPCheckpointLoader)"
            )
        level = augmentor.level(image.noise_augmentation)
        for row in embeds:
            parts.append(augmentor.augment(row[None], level, seed - SEED_OFFSET) * float(image.strength))
    if not parts:
        return torch.zeros(1, 2 * d)
    if len(parts) == 1:
        return parts[0]
    total = torch.stack(parts).sum(0)
    return augmentor.augment(total[:, :d], augmentor.level(merge_noise_augmentation), seed - SEED_OFFSET - 1)


def _images(entry: Any) -> tuple[UnclipImage, ...]:
    return tuple(entry.extra.get(UNCLIP_KEY, ()))


@dataclass(frozen=True, eq=False)
class UnclipConditioner:
    """Innermost wrapper of an unCLIP MODEL: gives every call the UNet's ``class_labels``, per chunk of
    rows the image embedding of that chunk's entry (zeros for entries without image, such as a negative
    prompt), in the UNet's dtype. The seed is the sampling run's."""

    augmentor: NoiseAugmentor
    unet: Any
    name: str = ""

    def __call__(self, call_next: ApplyModel, call: ModelCall) -> Tensor:
        seed = call.sampling.seed if call.sampling is not None else 0
        param = next(self.unet.parameters())
        rows = [
            unclip_adm(_images(e), self.augmentor, seed, name=self.name).expand(call.batch, -1)
            for e in call.entries
        ]
        labels = torch.cat(rows).to(param.device, param.dtype)
        return call_next(call.replace(unet_kwargs={**call.unet_kwargs, "class_labels": labels}))


def refuse_unclip(entries: Sequence[Any], name: str = "") -> None:
    """Fail when a call to a model without image-embedding input (no ``class_labels`` from an
    :class:`UnclipConditioner`) carries unCLIP images, naming the node that attached them and the model's
    file."""
    for entry in entries:
        images = _images(entry)
        if images:
            raise UnclipError(
                f"{images[0].origin or 'unCLIPConditioning'}: the model {name!r} is not an unCLIP "
                "checkpoint (its UNet takes no image embedding); sample with a Stable unCLIP model "
                "(sd21-unclip-h/-l) loaded by unCLIPCheckpointLoader"
            )


def unclip_wrappers(loaded: Any, name: str = "") -> tuple[Any, ...]:
    """The core wrapper a MODEL over ``loaded`` (a LoadedCheckpoint) needs: the conditioner of an unCLIP
    model, nothing for a plain one. A UNet with an image-embedding input but no augmentor from its file (a
    diffusers folder) gets the released models' settings: 1000 levels, no statistics."""
    info: CheckpointInfo = loaded.info
    augmentor = getattr(loaded, "noise_augmentor", None)
    if augmentor is None:
        if info.unet_config.get("class_embed_type") != "projection":
            return ()
        d = int(info.unet_config["projection_class_embeddings_input_dim"]) // 2
        levels = info.unclip.noise_levels if info.unclip is not None else DEFAULT_NOISE_LEVELS
        augmentor = NoiseAugmentor(torch.zeros(1, d), torch.ones(1, d), *cosine_noise_schedule(levels))
    return (UnclipConditioner(augmentor, loaded.unet, name),)


def unclip_clip_vision_loader(path: Path, options: LoadOptions) -> Any:
    """``ctx.models`` loader of an unCLIP checkpoint's CLIP vision tower (``embedder.model.visual.*``) as a
    transformers ``CLIPVisionModelWithProjection``."""
    index = open_single_file(path)
    prefix = EMBEDDER_PREFIX
    names = [k for k in index.keys() if k.startswith(prefix)]
    if not names:
        raise CheckpointError(path, f"has no CLIP vision tower ({prefix}* keys): not an unCLIP checkpoint")
    try:
        state = vision_from_original({k[len(prefix) :]: index.read(k) for k in names})
    except ValueError as exc:
        raise CheckpointError(path, f"unCLIP embedder: {exc}") from None
    return clip_vision_from_state(
        state, path, device=options.device, dtype=options.dtype, component="unCLIP embedder"
    )
