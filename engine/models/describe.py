"""What a model file that is not a usable SD checkpoint seems to be, for error messages.

People drop LoRAs, VAEs, ControlNets, embeddings, upscalers, SD3 and Flux files into the checkpoints
folder; saying which it looks like (and where it belongs) turns a puzzling failure into a fix.
"""

from collections import Counter
from collections.abc import Callable

from atelier.engine.models.files import TensorIndex


def describe_unknown(index: TensorIndex) -> str:
    """A hint saying what a file that is not an SD checkpoint seems to be."""
    keys = index.keys()
    if not keys:
        return "the file holds no tensors"

    def count(pred: Callable[[str], bool]) -> int:
        return sum(1 for k in keys if pred(k))

    lora_prefixes = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_", "lycoris_")
    for prefix in lora_prefixes:
        n = count(lambda k, p=prefix: k.startswith(p))
        if n:
            return f"found {n} keys starting with {prefix} - this looks like a LoRA, put it in models/loras"
    n = count(lambda k: any(s in k for s in (".lora_down.", ".lora_up.", ".lora_A.", ".lora_B.", ".hada_w1")))
    if n:
        return f"found {n} LoRA weight keys (lora_down/lora_up/lora_A/lora_B) - this looks like a LoRA, put it in models/loras"
    n = count(lambda k: "joint_blocks." in k or k.startswith("text_encoders.clip_g"))
    if n:
        return f"found {n} keys with joint_blocks / text_encoders.* - this looks like Stable Diffusion 3, which is not supported"
    n = count(lambda k: "double_blocks." in k or "single_blocks." in k)
    if n:
        return f"found {n} keys with double_blocks / single_blocks - this looks like Flux, which is not supported"
    n = count(lambda k: k.startswith("control_model.") or "input_hint_block." in k or "controlnet_" in k)
    if n:
        return f"found {n} ControlNet keys - this looks like a ControlNet, put it in models/controlnet"
    for vae_prefix in ("", "first_stage_model.", "vae."):
        if vae_prefix + "encoder.conv_in.weight" in index and vae_prefix + "decoder.conv_in.weight" in index:
            n = count(lambda k, p=vae_prefix: k.startswith(p + "encoder.") or k.startswith(p + "decoder."))
            return f"found {n} encoder.*/decoder.* keys and no UNet - this looks like a VAE, put it in models/vae"
    n = count(lambda k: k.startswith(("down_blocks.", "up_blocks.", "mid_block.")))
    if n:
        return (
            f"found {n} diffusers-format UNet keys (down_blocks.*) - a bare diffusers UNet is not a checkpoint; "
            "use the single-file checkpoint or the whole diffusers folder"
        )
    n = count(
        lambda k: (
            k in ("emb_params", "clip_l", "clip_g") or k.startswith(("string_to_param", "string_to_token"))
        )
    )
    if n:
        return "this looks like a textual-inversion embedding, put it in models/embeddings"
    if "conv_first.weight" in index or count(lambda k: k.startswith("model.") and ".body." in k):
        return "this looks like an upscale model, put it in models/upscale_models"
    prefixes = Counter(".".join(k.split(".")[:2]) for k in keys).most_common(3)
    listed = ", ".join(f"{p}.* ({n})" for p, n in prefixes)
    return f"unrecognised layout: {len(keys)} tensors, most common prefixes {listed}"
