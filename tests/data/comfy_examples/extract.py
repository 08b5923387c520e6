"""Extract (UI-format workflow, API prompt) pairs from ComfyUI's example images as compact JSON.

    python tests/data/comfy_examples/extract.py PATH/TO/ComfyUI_examples [--out tests/data/comfy_examples]

Reads every PNG/WEBP of the SD1.x/SD2.x/SDXL example folders, keeps those carrying both a ``workflow``
and a ``prompt`` whose node types Atelier has, and writes ``FOLDER__NAME.json``:
``{"source": "FOLDER/NAME.png", "workflow": {...}, "prompt": {...}}``. It reports the images skipped
and the node types missing, most frequent first.

The other examples (any family) whose UI graph uses the frontend's structure (group nodes, subgraphs,
bypassed or muted nodes, primitives, reroutes) go to ``structure/`` the same way: their node types are
mostly not Atelier's, so their test declares stand-ins for them.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from atelier.engine.comfy_ui.convert import VIRTUAL_TYPES
from atelier.engine.pnginfo import embedded_texts
from atelier.engine.registry import default_registry

#: The example folders of the SD1.x / SD2.x / SDXL family (ComfyUI_examples' layout).
SD_FOLDERS = (
    "2_pass_txt2img",
    "area_composition",
    "controlnet",
    "edit_models",
    "gligen",
    "hypernetworks",
    "img2img",
    "inpaint",
    "lcm",
    "lora",
    "model_merging",
    "noisy_latent_composition",
    "sdturbo",
    "sdxl",
    "textual_inversion_embeddings",
    "unclip",
    "upscale_models",
)


def node_types(workflow: dict[str, Any]) -> list[str]:
    """The node types a UI-format workflow uses, inside group nodes and subgraphs too (not the frontend's)."""
    levels = [workflow.get("nodes") or []]
    levels += [g.get("nodes") or [] for g in ((workflow.get("extra") or {}).get("groupNodes") or {}).values()]
    subgraphs = (workflow.get("definitions") or {}).get("subgraphs") or []
    levels += [sg.get("nodes") or [] for sg in subgraphs]
    packs = {sg.get("id") for sg in subgraphs}
    out = []
    for nodes in levels:
        for n in nodes:
            t = n.get("type")
            if t in VIRTUAL_TYPES or t in packs or str(t).startswith("workflow"):
                continue
            out.append(str(t))
    return out


def uses_structure(workflow: dict[str, Any]) -> bool:
    """Whether a UI graph uses group nodes, subgraphs, bypassed/muted nodes, primitives or reroutes."""
    if (workflow.get("extra") or {}).get("groupNodes") or (workflow.get("definitions") or {}).get(
        "subgraphs"
    ):
        return True
    return any(
        n.get("mode") in (2, 4) or n.get("type") in ("PrimitiveNode", "Reroute") for n in workflow["nodes"]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("examples", type=Path, help="a checkout of ComfyUI_examples")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent)
    args = ap.parse_args()
    registry = default_registry()
    missing: Counter[str] = Counter()
    kept, skipped = [], []
    for folder in SD_FOLDERS:
        for path in sorted((args.examples / folder).glob("*")):
            if path.suffix.lower() not in (".png", ".webp"):
                continue
            rel = path.relative_to(args.examples).as_posix()
            texts = embedded_texts(path)
            if "workflow" not in texts or "prompt" not in texts:
                skipped.append((rel, "no embedded workflow and prompt"))
                continue
            workflow, prompt = json.loads(texts["workflow"]), json.loads(texts["prompt"])
            lacking = sorted({t for t in node_types(workflow) if t not in registry})
            if lacking:
                missing.update(lacking)
                skipped.append((rel, "lacks " + ", ".join(lacking)))
                continue
            data = {"source": rel, "workflow": workflow, "prompt": prompt}
            target = args.out / f"{folder}__{path.stem}.json"
            target.write_text(
                json.dumps(data, separators=(",", ":"), ensure_ascii=False) + "\n", encoding="utf-8"
            )
            kept.append(rel)
    structure = args.out / "structure"
    structure.mkdir(exist_ok=True)
    stored = set(kept)
    for path in sorted(args.examples.rglob("*")):
        rel = path.relative_to(args.examples).as_posix()
        if path.suffix.lower() not in (".png", ".webp") or rel in stored:
            continue
        texts = embedded_texts(path)
        if "workflow" not in texts or "prompt" not in texts:
            continue
        workflow, prompt = json.loads(texts["workflow"]), json.loads(texts["prompt"])
        if uses_structure(workflow):
            data = {"source": rel, "workflow": workflow, "prompt": prompt}
            target = structure / f"{path.parent.name}__{path.stem}.json"
            target.write_text(
                json.dumps(data, separators=(",", ":"), ensure_ascii=False) + "\n", encoding="utf-8"
            )
            print(f"structure example: {rel}")
    print(f"kept {len(kept)}:")
    for rel in kept:
        print(f"  {rel}")
    print(f"skipped {len(skipped)}:")
    for rel, why in skipped:
        print(f"  {rel}: {why}")
    print("missing node types (examples needing each):")
    for t, n in missing.most_common():
        print(f"  {n:3d} {t}")


if __name__ == "__main__":
    main()
