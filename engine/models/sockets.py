"""The socket types of the Stable Diffusion node library, each tied to its Python carrier.

Node modules declare inputs and outputs with these objects (``Socket("model", MODEL)``,
``Output(LATENT)``), never with bare strings; the catalogue and the canvas take descriptions and colours
from here, and the executor checks each output against its carrier.
"""

from __future__ import annotations

from typing import Final

import torch

from atelier.engine.faces.detections import Faces
from atelier.engine.sampling.conditioning import CondEntry
from atelier.engine.sampling.custom import Guider, Noise, Sampler
from atelier.engine.types import SocketType

from .clip_vision import ClipVisionHandle, ClipVisionOutput
from .control_lora import ControlLoraHandle
from .controlnet import ControlNetHandle
from .handles import ClipHandle, ModelHandle, VaeHandle
from .ipadapter import IPAdapterModel
from .style_model import StyleModel
from .t2i_adapter import T2IAdapterHandle
from .upscale import UpscaleModelHandle

MODEL: Final = SocketType(
    "MODEL", "a denoising model handle (UNet + noise schedule + patches + wrappers)", "#b39ddb", ModelHandle
)
CLIP: Final = SocketType(
    "CLIP", "a text-encoder handle (one or two CLIP models + tokenizers)", "#ffd54f", ClipHandle
)
VAE: Final = SocketType("VAE", "a VAE handle", "#ef5350", VaeHandle)
CONDITIONING: Final = SocketType(
    "CONDITIONING",
    f"list of {CondEntry.__name__}: embedding, pooled output, area, mask, strength",
    "#ffa726",
    list,
)
LATENT: Final = SocketType("LATENT", "{samples: [B,C,h,w], noise_mask?: [B,1,h,w]}", "#ec407a", dict)
IMAGE: Final = SocketType("IMAGE", "float tensor [B,H,W,C] in 0..1", "#64b5f6", torch.Tensor)
MASK: Final = SocketType("MASK", "float tensor [B,H,W] in 0..1", "#81c784", torch.Tensor)
UPSCALE_MODEL: Final = SocketType(
    "UPSCALE_MODEL", "an image upscaler model (spandrel: ESRGAN, SwinIR, ...)", "#9575cd", UpscaleModelHandle
)
CONTROL_NET: Final = SocketType(
    "CONTROL_NET",
    "a ControlNet model (diffusers ControlNetModel, SD1.x / SD2.x / SDXL), T2I-Adapter or Control-LoRA",
    "#4db6ac",
    (ControlNetHandle, T2IAdapterHandle, ControlLoraHandle),
)
FACES: Final = SocketType(
    "FACES",
    f"{Faces.__name__}: image size and per face its box, score, landmarks, crop region and mask",
    "#f48fb1",
    Faces,
)
SIGMAS: Final = SocketType(
    "SIGMAS",
    "float tensor [steps + 1]: the noise levels a sampler walks, high to low",
    "#cddc39",
    torch.Tensor,
)
SAMPLER: Final = SocketType(
    "SAMPLER", f"{Sampler.__name__}: a sampler function by name, with its options", "#4dd0e1", Sampler
)
NOISE: Final = SocketType(
    "NOISE", f"{Noise.__name__}: the initial noise for a latent (seeded, or none)", "#bdbdbd", Noise
)
GUIDER: Final = SocketType(
    "GUIDER",
    f"{Guider.__name__}: a model with its conditioning and guidance (CFG, dual CFG, ...)",
    "#80cbc4",
    Guider,
)
CLIP_VISION: Final = SocketType(
    "CLIP_VISION", f"{ClipVisionHandle.__name__}: a CLIP image encoder", "#a1887f", ClipVisionHandle
)
CLIP_VISION_OUTPUT: Final = SocketType(
    "CLIP_VISION_OUTPUT",
    f"{ClipVisionOutput.__name__}: image embeds and hidden states of a batch of images",
    "#8d6e63",
    ClipVisionOutput,
)
IPADAPTER: Final = SocketType(
    "IPADAPTER", f"{IPAdapterModel.__name__}: an IP-Adapter (image prompt adapter)", "#ce93d8", IPAdapterModel
)
STYLE_MODEL: Final = SocketType(
    "STYLE_MODEL",
    f"{StyleModel.__name__}: a style adapter (CLIP vision encoding -> text tokens)",
    "#bcaaa4",
    StyleModel,
)
