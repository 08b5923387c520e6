"""Model browser listing benchmark: ``python bench/model_browser.py [--loras 300]``.

Writes a LoRA folder in a temporary directory: files with a kohya SD1.5 LoRA's header (about 800 tensor
entries: down, up and alpha for 264 modules; the tensors themselves tiny) and metadata with a 300-tag
``ss_tag_frequency``, half of them with a preview image beside them. Times, as medians of several runs, the
listing the canvas asks for (``GET /atelier/v1/models/loras/browse``, through the service): cold (every
header read) and warm (the per-file-version cache), and prints the header size per file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from atelier.engine.folders import Folders  # noqa: E402
from atelier.engine.registry import default_registry  # noqa: E402
from atelier.engine.server.service_models import ModelBrowserService  # noqa: E402


def write_lora(path: Path, seed: int) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for i in range(264):
        base = f"lora_unet_down_blocks_{i % 4}_attentions_{i % 2}_transformer_blocks_{i}_attn2_to_k"
        tensors[f"{base}.lora_down.weight"] = torch.zeros(1, 768)
        tensors[f"{base}.lora_up.weight"] = torch.zeros(1, 1)
        tensors[f"{base}.alpha"] = torch.zeros(())
    tags = {f"10_subject{seed}": {f"tag number {t}": (t * 7 + seed) % 50 + 1 for t in range(300)}}
    metadata = {
        "ss_tag_frequency": json.dumps(tags),
        "ss_output_name": f"lora{seed}",
        "ss_network_dim": "32",
        "ss_network_alpha": "16",
        "ss_resolution": "(512, 512)",
        "ss_base_model_version": "sd_v1",
    }
    save_file(tensors, str(path), metadata=metadata)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--loras", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "loras"
        folder.mkdir()
        for i in range(args.loras):
            write_lora(folder / f"lora{i:04d}.safetensors", i)
            if i % 2 == 0:
                Image.new("RGB", (8, 8)).save(folder / f"lora{i:04d}.preview.png")
        header = int.from_bytes((folder / "lora0000.safetensors").read_bytes()[:8], "little")
        registry = default_registry()
        colds, warms = [], []
        for _ in range(args.repeat):
            service = ModelBrowserService(Folders(models={"loras": [folder]}), registry)
            t0 = time.perf_counter()
            listing = service.listing("loras")
            colds.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            service.listing("loras")
            warms.append(time.perf_counter() - t0)
        assert isinstance(listing, dict) and len(listing["models"]) == args.loras
        assert all(m["family"] == "sd15" for m in listing["models"])
        cold, warm = statistics.median(colds), statistics.median(warms)
        print(f"{args.loras} LoRAs, header {header / 1024:.0f} KiB each")
        print(f"cold listing: {cold * 1000:.0f} ms ({cold / args.loras * 1000:.2f} ms per file)")
        print(f"warm listing: {warm * 1000:.0f} ms ({warm / args.loras * 1000:.3f} ms per file)")


if __name__ == "__main__":
    main()
