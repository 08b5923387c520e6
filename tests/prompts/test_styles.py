"""Prompt styles: A1111's template rules and styles.csv quirks, the library's sources, the ApplyStyle node."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from atelier.engine.executor import JobResult
from atelier.engine.folders import Folders
from atelier.engine.models.styles import (
    NO_STYLE,
    SHIPPED_STYLES,
    Style,
    StyleFileError,
    UnknownStyleError,
    load_styles,
    merge_template,
    read_styles_csv,
    read_styles_json,
)
from atelier.engine.runtime import Engine, EngineConfig, build_engine

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- templates


@pytest.mark.parametrize(
    ("template", "text", "expected"),
    [
        ("oil painting of {prompt}, impasto", "a woman", "oil painting of a woman, impasto"),
        ("{prompt} and again {prompt}", "x", "x and again x"),
        ("film grain, 35mm", "a woman", "a woman, film grain, 35mm"),
        ("  film grain ", "  a woman  ", "a woman, film grain"),
        ("film grain", "", "film grain"),
        ("", "a woman", "a woman"),
        ("{prompt}", "", ""),
    ],
)
def test_merge_template_follows_a1111(template: str, text: str, expected: str) -> None:
    assert merge_template(template, text) == expected


def test_style_applies_to_both_prompts() -> None:
    style = Style("Film", "analog photo of {prompt}", "digital, cgi")
    assert style.apply("a man (smiling:1.2)", "blurry") == (
        "analog photo of a man (smiling:1.2)",
        "blurry, digital, cgi",
    )


# ---------------------------------------------------------------- A1111 styles.csv


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_a1111_csv_quirks(tmp_path: Path) -> None:
    csv_text = (
        "name,prompt,negative_prompt\r\n"
        '"Cinematic","cinematic still of {prompt}, shallow depth of field, ""anamorphic"" bokeh","cartoon, painting"\r\n'
        '"Two lines","{prompt}, first line\nsecond line","bad, ugly"\r\n'
        "# Portraits,,\r\n"
        ",orphan prompt,\r\n"
        "\r\n"
        "Short row,only a prompt\r\n"
        "Spaced, lead spaces are skipped, as in A1111\r\n"
        '"Cinematic","replaced {prompt}",""\r\n'
    )
    styles = read_styles_csv(write(tmp_path / "styles.csv", csv_text, "utf-8-sig"))  # with a BOM
    by_name = {s.name: s for s in styles}
    assert [s.name for s in styles] == ["Cinematic", "Two lines", "Short row", "Spaced", "Cinematic"]
    assert styles[0].prompt == 'cinematic still of {prompt}, shallow depth of field, "anamorphic" bokeh'
    assert styles[0].negative_prompt == "cartoon, painting"
    assert by_name["Two lines"].prompt == "{prompt}, first line\nsecond line"
    assert by_name["Short row"] == Style("Short row", "only a prompt", "", str(tmp_path / "styles.csv"))
    assert by_name["Spaced"].prompt == "lead spaces are skipped"
    # a later row of the same name wins, in the library, keeping the first row's place
    lib = load_styles(Folders(models={"styles": [tmp_path]}), shipped=None)
    assert lib.names() == [NO_STYLE, "Cinematic", "Two lines", "Short row", "Spaced"]
    assert lib.get("Cinematic").prompt == "replaced {prompt}"


def test_old_a1111_csv_with_a_text_column(tmp_path: Path) -> None:
    (style,) = read_styles_csv(write(tmp_path / "old.csv", "name,text\nRetro,retro photo of {prompt}\n"))
    assert (style.prompt, style.negative_prompt) == ("retro photo of {prompt}", "")


def test_csv_without_a_name_column_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(StyleFileError, match=r"bad\.csv: no 'name' column \(columns: title, prompt\)"):
        read_styles_csv(write(tmp_path / "bad.csv", "title,prompt\nx,y\n"))
    assert read_styles_csv(write(tmp_path / "empty.csv", "")) == []


def test_atelier_json_styles(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(
        json.dumps(
            {"format": "atelier/styles", "version": 1, "styles": [{"name": "Mine", "prompt": "x {prompt}"}]}
        )
    )
    assert read_styles_json(path) == [Style("Mine", "x {prompt}", "", str(path))]
    path.write_text(json.dumps({"format": "atelier/styles", "styles": [{"prompt": "no name"}]}))
    with pytest.raises(StyleFileError, match="style 0 needs a name"):
        read_styles_json(path)


# ---------------------------------------------------------------- the library


def test_shipped_portrait_styles() -> None:
    lib = load_styles(Folders())
    assert lib.problems == ()
    names = lib.names()
    assert names[0] == NO_STYLE
    for name in ("Studio portrait", "Film photography", "Oil painting", "Soft window light"):
        assert name in names
        positive, negative = lib.get(name).apply("a woman with freckles", "")
        assert "a woman with freckles" in positive and positive != "a woman with freckles"
        assert negative and not negative.startswith(",")
    assert lib.get(NO_STYLE).apply("a", "b") == ("a", "b")
    assert all(lib.get(n).source.startswith(str(SHIPPED_STYLES)) for n in names[1:])


def test_folder_styles_extend_and_override_the_shipped_ones(tmp_path: Path) -> None:
    write(
        tmp_path / "styles.csv",
        'name,prompt,negative_prompt\nOil painting,"my oil {prompt}",\nNeon,"{prompt}, neon",\n',
    )
    write(
        tmp_path / "config.json", json.dumps({"samples_format": "png"})
    )  # an A1111 settings file: not styles
    write(tmp_path / "broken.csv", "nothing,here\n1,2\n")
    lib = load_styles(Folders(models={"styles": [tmp_path]}))
    assert lib.get("Oil painting").prompt == "my oil {prompt}"
    assert lib.names().index("Oil painting") == load_styles(Folders()).names().index("Oil painting")
    assert lib.names()[-1] == "Neon"
    assert len(lib.problems) == 1 and "broken.csv: no 'name' column" in lib.problems[0]
    with pytest.raises(UnknownStyleError) as info:
        lib.get("Vaporwave")
    message = str(info.value)
    assert message.startswith("unknown style 'Vaporwave' (styles: 'none', 'Studio portrait'")
    assert "unreadable: styles file" in message and "broken.csv" in message


def test_a1111_styles_csv_named_in_the_config_file(tmp_path: Path) -> None:
    webui = tmp_path / "stable-diffusion-webui"
    webui.mkdir()
    write(webui / "styles.csv", "name,prompt,negative_prompt\nMy A1111 style,{prompt} in A1111,\n")
    config = write(tmp_path / "atelier.toml", f'[models.paths]\nstyles = ["{webui / "styles.csv"}"]\n')
    engine = build_engine(EngineConfig(device="cpu", models_dir=tmp_path / "models", config_file=config))
    assert "My A1111 style" in load_styles(engine.folders).names()
    described = engine.describe("ApplyStyle")
    assert "My A1111 style" in next(i for i in described["inputs"] if i["name"] == "style")["choices"]


# ---------------------------------------------------------------- the node


def styled_portrait() -> dict[str, Any]:
    """portrait.json with an ApplyStyle node between the prompts and the encoders."""
    wf = json.loads((ROOT / "workflows" / "portrait.json").read_text())
    wf["nodes"]["style"] = {"type": "ApplyStyle", "inputs": {"style": "none", "prompt": "", "negative": ""}}
    wf["nodes"]["positive"]["inputs"]["text"] = {"node": "style", "output": "prompt"}
    wf["nodes"]["negative"]["inputs"]["text"] = {"node": "style", "output": "negative"}
    wf["parameters"]["prompt"]["targets"] = ["style.prompt"]
    wf["parameters"]["negative"]["targets"] = ["style.negative"]
    wf["parameters"]["style"] = {"type": "COMBO", "default": "none", "targets": ["style.style"]}
    return wf


def run(engine: Engine, wf: dict[str, Any], **overrides: Any) -> JobResult:
    base = {"checkpoint": "tiny15.safetensors", "steps": 2, "width": 64, "height": 64}
    base.update(overrides)
    return engine.executor.run(copy.deepcopy(wf), overrides=base)


def pixels(engine: Engine, res: JobResult) -> np.ndarray:
    assert res.ok, res.failure or res.errors
    ref = res.outputs["save"]["images"][0]
    return np.asarray(Image.open(engine.folders.output / ref["subfolder"] / ref["filename"]))


def test_apply_style_chains_into_the_encoders(engine: Engine) -> None:
    styled = run(engine, styled_portrait(), style="Oil painting", prompt="an old sailor", negative="blurry")
    positive, negative = load_styles(engine.folders).get("Oil painting").apply("an old sailor", "blurry")
    typed = run(
        engine,
        json.loads((ROOT / "workflows" / "portrait.json").read_text()),
        prompt=positive,
        negative=negative,
    )
    assert (pixels(engine, styled) == pixels(engine, typed)).all()
    unstyled = run(engine, styled_portrait(), style="none", prompt="an old sailor", negative="blurry")
    assert not (pixels(engine, styled) == pixels(engine, unstyled)).all()


def test_unknown_style_is_refused_at_validation(engine: Engine) -> None:
    checked = engine.check(styled_portrait(), {"checkpoint": "tiny15.safetensors", "style": "Vaporwave"})
    assert [(e.node, e.input) for e in checked.errors] == [("style", "style")]
    assert "'Vaporwave' is not one of: 'none', 'Studio portrait'" in checked.errors[0].message


def test_unknown_embeddings_in_style_or_prompts_are_refused_at_validation(
    engine: Engine, styles_dir: Path, emb_dir: Path
) -> None:
    write(
        styles_dir / "styles.csv",
        "name,prompt,negative_prompt\nTI,{prompt} embedding:skin,embedding:badhands\n",
    )
    over = {"checkpoint": "tiny15.safetensors", "style": "TI", "prompt": "a (embedding:face:1.1)"}
    checked = engine.check(styled_portrait(), over)
    assert sorted((e.node, e.input, e.message) for e in checked.errors) == [
        ("style", "prompt", f"unknown embedding 'face' (embeddings folder: {emb_dir})"),
        ("style", "style", f"style 'TI': unknown embedding 'badhands' (embeddings folder: {emb_dir})"),
        ("style", "style", f"style 'TI': unknown embedding 'skin' (embeddings folder: {emb_dir})"),
    ]


def test_editing_the_styles_file_reapplies_the_style(engine: Engine, styles_dir: Path) -> None:
    path = write(styles_dir / "styles.csv", "name,prompt,negative_prompt\nMine,red {prompt},\n")
    wf = styled_portrait()
    first = run(engine, wf, style="Mine", prompt="cat")
    assert "style" in run(engine, wf, style="Mine", prompt="cat").cached
    write(path, "name,prompt,negative_prompt\nMine,blue {prompt},\n")
    os.utime(path, ns=(path.stat().st_mtime_ns + 10**9,) * 2)
    edited = run(engine, wf, style="Mine", prompt="cat")
    assert "style" in edited.executed and "positive" in edited.executed
    assert not (pixels(engine, first) == pixels(engine, edited)).all()
    write(path, "name,prompt,negative_prompt\nOther,x,\n")
    gone = run(engine, wf, style="Mine", prompt="cat")
    assert gone.status == "invalid" and "'Mine' is not one of" in gone.errors[0].message


def test_fingerprint_of_a_linked_style_choice_covers_every_style(engine: Engine, styles_dir: Path) -> None:
    from atelier.engine.node import Context, JobContext
    from atelier.nodes.styles import ApplyStyle

    ctx = Context(JobContext("plan"), "style", "ApplyStyle", files=engine.folders)
    path = write(styles_dir / "styles.csv", "name,prompt,negative_prompt\nMine,red {prompt},\n")
    linked = ApplyStyle.fingerprint(ctx, prompt="cat", negative="")
    chosen = ApplyStyle.fingerprint(ctx, style="Mine", prompt="cat", negative="")
    assert chosen == ("red {prompt}", "") and ApplyStyle.fingerprint(ctx, style="none") is None
    write(path, "name,prompt,negative_prompt\nMine,blue {prompt},\n")
    assert ApplyStyle.fingerprint(ctx, prompt="cat", negative="") != linked
