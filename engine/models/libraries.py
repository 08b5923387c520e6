"""Everything Atelier takes from the model libraries (accelerate, diffusers, transformers), imported here.

The other modules import these names from this module, never from the libraries themselves. The reason is
threads. diffusers and transformers resolve their top-level names lazily, on first access, and two threads
doing that at once break: one of them fails with ``cannot import name 'AutoencoderKL' from 'diffusers'``
(diffusers 0.42.1, every time in ``tests/engine/test_libraries.py``). A server imports the libraries on its
warm-up thread (``engine/warmup.py``) while a job may already be loading its first model, and a command-line
run does the same beside its planning.

Here the names are resolved while Python imports this one module, and Python lets one thread import a
module at a time: a second thread that asks for this module waits until the first has finished it, and then
finds every name resolved.

Importing this module costs what importing the libraries costs (seconds): start-up code imports it only
when a model is loaded (``tests/engine/test_startup_imports.py``).
"""

from __future__ import annotations

from accelerate import init_empty_weights
from diffusers import AutoencoderKL, ControlNetModel, T2IAdapter, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_controlnet_checkpoint,
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
)
from diffusers.loaders.unet import UNet2DConditionLoadersMixin
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from diffusers.models.embeddings import get_timestep_embedding
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

__all__ = [
    "AttnProcessor",
    "AttnProcessor2_0",
    "AutoencoderKL",
    "CLIPTextConfig",
    "CLIPTextModel",
    "CLIPTextModelWithProjection",
    "CLIPTokenizer",
    "CLIPVisionConfig",
    "CLIPVisionModelWithProjection",
    "ControlNetModel",
    "T2IAdapter",
    "UNet2DConditionLoadersMixin",
    "UNet2DConditionModel",
    "convert_controlnet_checkpoint",
    "convert_ldm_clip_checkpoint",
    "convert_ldm_unet_checkpoint",
    "convert_ldm_vae_checkpoint",
    "convert_open_clip_checkpoint",
    "get_timestep_embedding",
    "init_empty_weights",
]
