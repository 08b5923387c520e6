"""Round trip on ComfyUI's own examples: UI format -> Atelier -> API format equals the prompt ComfyUI stored
in the same image (tests/data/comfy_examples, made by its extract.py from ComfyUI_examples)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from atelier.engine.comfy_ui import from_comfy_ui
from atelier.engine.registry import Registry, default_registry
from atelier.engine.workflow import to_comfy_api

DATA = Path(__file__).resolve().parents[1] / "data" / "comfy_examples"
EXAMPLES = sorted(DATA.glob("*.json"))

#: Inputs ComfyUI's older frontend sent for Load Image's upload button: no input of the node.
UPLOAD_BUTTONS = {"upload", "choose file to upload"}


@pytest.fixture(scope="module")
def registry() -> Registry:
    return default_registry()


def normalised(prompt: dict[str, Any]) -> dict[str, Any]:
    """Node id -> (type, inputs): what a prompt computes (titles are display, upload buttons frontend-only)."""
    out = {}
    for nid, entry in prompt.items():
        inputs = {k: v for k, v in entry["inputs"].items() if not (k in UPLOAD_BUTTONS and v == "image")}
        out[str(nid)] = (entry["class_type"], inputs)
    return out


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 20


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_ui_format_converts_to_the_prompt_comfyui_stored(path: Path, registry: Registry) -> None:
    example = json.loads(path.read_text(encoding="utf-8"))
    wf = from_comfy_ui(example["workflow"], registry)
    ours = normalised(to_comfy_api(wf, registry))
    theirs = normalised(example["prompt"])
    assert ours == theirs
    # links are exact [node id, output index] pairs, and every literal keeps its JSON type
    for nid, (_, inputs) in ours.items():
        for name, value in inputs.items():
            assert type(value) is type(theirs[nid][1][name]) or isinstance(value, (int, float)), (nid, name)


def test_damaged_ui_workflows_fail_with_a_format_error_only(registry: Registry) -> None:
    """Whatever part of a real UI-format file is damaged, conversion names a problem; it never crashes."""
    import copy
    import random

    from atelier.engine.workflow import WorkflowFormatError

    junk: list[Any] = [None, 1, -1, "x", [], {}, True, 1.5, [1], {"a": 1}]
    workflows = [json.loads(p.read_text(encoding="utf-8"))["workflow"] for p in EXAMPLES]
    rnd = random.Random(7)

    def damage(o: Any) -> None:
        if isinstance(o, (dict, list)) and o:
            key = rnd.choice(list(o)) if isinstance(o, dict) else rnd.randrange(len(o))
            r = rnd.random()
            if r < 0.3:
                o[key] = rnd.choice(junk)
            elif r < 0.4:
                del o[key]
            else:
                damage(o[key])

    failures = 0
    for _ in range(400):
        data = copy.deepcopy(rnd.choice(workflows))
        for _ in range(rnd.randint(1, 3)):
            damage(data)
        try:
            from_comfy_ui(data, registry)
        except WorkflowFormatError as exc:
            assert str(exc)
            failures += 1
    assert failures > 20  # the damage is real: many of them are refused
