"""The model browser (the left sidebar's Models tab) in a real browser: cards with previews, families and
trigger words read from the files' headers, search, and drag/double-click/Enter adding the loader node."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from tests.browser.conftest import atelier_serve

SD1_KEY = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
XL_KEY = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k"


def write_loras(loras: Path) -> None:
    loras.mkdir(parents=True)
    tags = {"10_ohwx woman": {"ohwx": 12, "red hair": 7, "smiling": 3}}
    save_file(
        {
            f"{SD1_KEY}.lora_down.weight": torch.zeros(4, 768),
            f"{SD1_KEY}.lora_up.weight": torch.zeros(320, 4),
        },
        str(loras / "ohwx.safetensors"),
        metadata={"ss_tag_frequency": json.dumps(tags), "ss_network_dim": "4", "ss_output_name": "ohwx"},
    )
    # a portrait-shaped preview beside it, as civitai helpers save them
    Image.new("RGB", (64, 96), (214, 120, 88)).save(loras / "ohwx.preview.png")
    (loras / "xl").mkdir()
    save_file(
        {
            f"{XL_KEY}.lora_down.weight": torch.zeros(4, 2048),
            "lora_te1_x.lora_down.weight": torch.zeros(4, 768),
        },
        str(loras / "xl" / "softlight.safetensors"),
        metadata={"modelspec.trigger_phrase": "pwrt style, soft light", "modelspec.title": "Soft light"},
    )
    (loras / "broken.safetensors").write_bytes(b"\xff" * 40)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server whose models root also holds LoRAs (this module's own: the shared one has none)."""
    base = tmp_path_factory.mktemp("models-serve")
    write_loras(base / "models" / "loras")
    with atelier_serve(base, [], "/atelier/v1/system") as url:
        # the checkpoint's preview, written beside the tiny checkpoint the server was started with
        Image.new("RGB", (64, 96), (70, 110, 200)).save(base / "models" / "checkpoints" / "tiny15.png")
        yield url


def workflow(page: Any) -> dict:
    return page.evaluate("window.atelier.toWorkflow()")


def new_nodes(page: Any, before: dict) -> list[dict]:
    after = workflow(page)["nodes"]
    return [after[k] for k in after if k not in before["nodes"]]


def card(page: Any, name: str) -> Any:
    return page.locator(f'.mb-card[data-name="{name}"]')


def shown(page: Any) -> list[str]:
    return page.eval_on_selector_all(".mb-card", "els => els.map(e => e.dataset.name)")


def test_browse_search_and_add_loaders(page: Any) -> None:
    page.click("#tab-models")
    page.wait_for_selector('.mb-card[data-name="tiny15.safetensors"]')
    ckpt = card(page, "tiny15.safetensors")
    assert ckpt.locator(".mb-badge").inner_text() == "SD1.x"
    page.wait_for_function(
        "document.querySelector('.mb-card[data-name=\"tiny15.safetensors\"] img.mb-thumb').naturalWidth === 64"
    )
    # the canvas made room for the wider sidebar
    assert page.locator(".sidebar.left").bounding_box()["width"] == pytest.approx(320, abs=2)
    page.shot("checkpoints")

    page.click('.mb-kind[data-kind="loras"]')
    page.wait_for_selector('.mb-card[data-name="ohwx.safetensors"]')
    assert sorted(shown(page)) == ["broken.safetensors", "ohwx.safetensors", "xl/softlight.safetensors"]
    ohwx = card(page, "ohwx.safetensors")
    assert ohwx.locator(".mb-badge").inner_text() == "SD1.x"
    assert ohwx.locator(".mb-word").all_inner_texts() == ["ohwx", "red hair", "smiling"]
    page.wait_for_function(
        "document.querySelector('.mb-card[data-name=\"ohwx.safetensors\"] img.mb-thumb').naturalHeight === 96"
    )
    soft = card(page, "xl/softlight.safetensors")
    assert soft.locator(".mb-badge").inner_text() == "SDXL"
    assert soft.locator(".mb-placeholder").count() == 1 and soft.locator("img").count() == 0
    assert soft.locator(".mb-word").all_inner_texts() == ["pwrt style", "soft light"]
    assert (
        "not a valid safetensors file" in card(page, "broken.safetensors").locator(".mb-error").inner_text()
    )
    # a click opens the training details and the tags with their counts
    ohwx.locator(".mb-name").click()
    details = ohwx.locator(".mb-details")
    assert details.locator("dt").all_inner_texts()[:2] == ["Title", "Rank"]
    assert details.locator("dd").all_inner_texts()[:2] == ["ohwx", "4"]
    assert details.locator(".mb-tag").all_inner_texts() == ["ohwx×12", "red hair×7", "smiling×3"]
    page.shot("loras")
    ohwx.locator(".mb-name").click()
    assert details.count() == 0

    # search: by trigger word, by family, by name; every word must match
    for query, expected in (
        ("pwrt", ["xl/softlight.safetensors"]),
        ("sdxl", ["xl/softlight.safetensors"]),
        ("red hair", ["ohwx.safetensors"]),
        ("sd1 smiling", ["ohwx.safetensors"]),
        ("broken", ["broken.safetensors"]),
        ("nothing like this", []),
    ):
        page.fill("#model-filter", query)
        assert shown(page) == expected, query
    page.fill("#model-filter", "ohwx")
    page.shot("search")
    page.fill("#model-filter", "")

    # drag a LoRA onto the canvas: a LoraLoader with its file, wired nowhere, where it was dropped
    before = workflow(page)
    canvas = page.locator("#graph-canvas").bounding_box()
    drop = {"x": 140, "y": canvas["height"] - 200}
    page.drag_and_drop('.mb-card[data-name="ohwx.safetensors"]', "#graph-canvas", target_position=drop)
    [lora] = new_nodes(page, before)
    assert lora["type"] == "LoraLoader"
    assert lora["inputs"]["lora_name"] == "ohwx.safetensors"
    assert "model" not in lora["inputs"] and "clip" not in lora["inputs"]
    at = page.evaluate(
        "([x, y]) => window.atelier.app.canvas.convertEventToCanvasOffset({clientX: x, clientY: y})",
        [canvas["x"] + drop["x"], canvas["y"] + drop["y"]],
    )
    node = page.evaluate(
        "() => window.atelier.app.graph._nodes.find(n => n.type === 'LoraLoader').pos.map(Number)"
    )
    assert node == pytest.approx(at, abs=1)
    page.shot("lora dropped")

    # double-click a checkpoint card, and Enter on a focused one
    page.click('.mb-kind[data-kind="checkpoints"]')
    before = workflow(page)
    card(page, "tiny15.safetensors").dblclick()
    card(page, "tiny15.safetensors").focus()
    page.keyboard.press("Enter")
    added = new_nodes(page, before)
    assert [(n["type"], n["inputs"]["ckpt_name"]) for n in added] == [
        ("CheckpointLoaderSimple", "tiny15.safetensors")
    ] * 2


def test_trigger_word_goes_into_the_prompt_being_edited(page: Any) -> None:
    page.click("#tab-models")
    page.click('.mb-kind[data-kind="loras"]')
    page.wait_for_selector('.mb-card[data-name="ohwx.safetensors"] .mb-word')
    prompt = page.locator('.node-textarea[data-input="text"]').first
    prompt.click()
    page.keyboard.press("End")
    page.keyboard.press("Control+End")
    before = prompt.input_value()
    page.locator('.mb-card[data-name="ohwx.safetensors"] .mb-word', has_text="red hair").click()
    assert prompt.input_value() == before + ", red hair"
    texts = [n["inputs"].get("text") for n in workflow(page)["nodes"].values()]
    assert before + ", red hair" in texts
    page.shot("trigger word inserted")
