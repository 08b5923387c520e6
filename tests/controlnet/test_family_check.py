"""A ControlNet of another family than the model it meets is refused at validation, before anything runs:
the error names the ControlNet's node, its file and both families (the tiny SD1.5 and SDXL files are
told apart from their headers by the loaders' own detection)."""

from __future__ import annotations

from typing import Any

from atelier.engine.runtime import Engine
from atelier.engine.validate import check
from tests.controlnet.test_controlnet_sampling import graph, hint_png


def refusals(engine: Engine, wf: dict[str, Any]) -> list[Any]:
    hint_png(engine)
    res = check(wf, engine.executor.registry, outputs=["sampler"], files=engine.folders)
    return [e for e in res.errors if e.severity == "error"]


def test_sdxl_controlnet_with_an_sd15_checkpoint_is_refused_naming_node_file_and_families(
    engine: Engine,
) -> None:
    [err] = refusals(engine, graph("sd15", [{"name": "cnxl.safetensors"}]))
    assert (err.code, err.node, err.node_type, err.input) == (
        "incompatible",
        "load0",
        "ControlNetLoader",
        "control_net_name",
    )
    assert "ControlNet 'cnxl.safetensors' is for SDXL" in err.message
    assert "checkpoint 'tiny15.safetensors', which is SD1.x" in err.message
    assert "node sampler (KSampler)" in err.message
    res = engine.executor.run(graph("sd15", [{"name": "cnxl.safetensors"}]), outputs=["sampler"])
    assert not res.ok and res.executed == []  # nothing ran


def test_sd15_controlnet_with_sdxl_is_refused_and_matching_families_pass(engine: Engine) -> None:
    wf = graph("sdxl", [{"name": "cnxl.safetensors"}, {"name": "cn15.safetensors", "advanced": False}])
    [err] = refusals(engine, wf)
    assert err.node == "load1" and "SD1.x" in err.message and "SDXL" in err.message
    assert (
        refusals(engine, graph("sdxl", [{"name": "cnxl.safetensors"}, {"name": "cnxl_b.safetensors"}])) == []
    )
    layouts = [
        "cn15.safetensors",
        "cn15_diffusers.safetensors",
        "cn15_folder/diffusion_pytorch_model.safetensors",
    ]
    assert refusals(engine, graph("sd15", [{"name": n} for n in layouts])) == []


def test_the_family_flows_through_other_nodes_to_where_model_and_conditioning_meet(engine: Engine) -> None:
    wf = graph("sd15", [{"name": "cnxl.safetensors"}])
    wf["ms"] = {
        "class_type": "ModelSamplingDiscrete",
        "inputs": {"model": ["ckpt", 0], "sampling": "eps", "zsnr": False},
    }
    wf["both"] = {
        "class_type": "ConditioningCombine",
        "inputs": {"conditioning_1": ["pos", 0], "conditioning_2": ["apply0", 0]},
    }
    wf["sampler"]["inputs"].update(model=["ms", 0], positive=["both", 0])
    [err] = refusals(engine, wf)
    assert err.node == "load0" and "cnxl.safetensors" in err.message


def test_a_torch_pickle_is_not_opened_at_validation(engine: Engine) -> None:
    # cn15.pth would need unpickling to tell its family: validation leaves it to the run-time check
    assert refusals(engine, graph("sdxl", [{"name": "cn15.pth"}])) == []
