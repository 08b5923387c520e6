"""Cancel lands inside a long forward pass: between the network's blocks, not at the end of the step."""

from __future__ import annotations

import copy
import json
import threading
import time
from pathlib import Path

import pytest

from atelier.engine import events as E
from atelier.engine.models.handles import load_checkpoint_handles
from atelier.engine.node import CancelToken, Interrupted, interrupt_point
from atelier.engine.runtime import Engine

ROOT = Path(__file__).resolve().parents[2]
BLOCK_SECONDS = 0.4


def _slow_blocks(blocks, started: list[float], gate: threading.Event | None = None):
    """Forward hooks that make every block take BLOCK_SECONDS and record when each one ran."""

    def slow(module, args, output):
        started.append(time.monotonic())
        if gate is not None:
            gate.set()
        time.sleep(BLOCK_SECONDS)

    return [b.register_forward_hook(slow) for b in blocks]


def test_interrupt_point_is_a_no_op_outside_a_job() -> None:
    interrupt_point("anywhere")  # no job: nothing to honour


@pytest.mark.parametrize("stage", ["unet", "vae"])
def test_a_cancel_lands_within_one_block_of_a_slow_forward(
    engine: Engine, models_root: Path, stage: str
) -> None:
    model, _, vae = load_checkpoint_handles(engine.models, models_root / "checkpoints" / "tiny15.safetensors")
    assert vae is not None
    net = model.unet if stage == "unet" else vae.vae.decoder
    blocks = [*net.up_blocks]  # each made slow: a whole forward pass would take len(blocks) * 0.4 s
    assert len(blocks) >= 2
    ran: list[float] = []
    first_block = threading.Event()
    hooks = _slow_blocks(blocks, ran, first_block)
    wf = json.loads((ROOT / "workflows" / "portrait.json").read_text())
    overrides = {"checkpoint": "tiny15.safetensors", "steps": 2, "width": 64, "height": 64}
    # with stage "vae" the sampler runs at full speed; only the decoder's blocks are slow
    token = CancelToken()
    events: list[E.Event] = []
    result: list = []
    job = threading.Thread(
        target=lambda: result.append(
            engine.executor.run(copy.deepcopy(wf), overrides=overrides, cancel=token, on_event=events.append)
        )
    )
    try:
        job.start()
        assert first_block.wait(30)
        cancelled_at = time.monotonic()
        token.cancel()
        job.join(30)
    finally:
        for h in hooks:
            h.remove()
    assert not job.is_alive()
    res = result[0]
    assert res.status == "interrupted"
    stopped = [e for e in events if isinstance(e, E.JobInterrupted)][0]
    assert stopped.node == ("sampler" if stage == "unet" else "decode")
    # the block running when the cancel came finishes; no further block starts
    assert [t for t in ran if t > cancelled_at] == []
    assert len(ran) == 1
    # the model is usable afterwards (its weights and hooks intact): the next job runs
    assert engine.executor.run(copy.deepcopy(wf), overrides=overrides).ok


def test_interrupted_propagates_out_of_a_direct_forward_only_inside_a_job(
    engine: Engine, models_root: Path
) -> None:
    from atelier.engine.node import cancel_scope

    model, _, _ = load_checkpoint_handles(engine.models, models_root / "checkpoints" / "tiny15.safetensors")
    import torch

    x, t, c = torch.randn(1, 4, 8, 8), torch.tensor([10.0]), torch.randn(1, 77, 32)
    with torch.inference_mode():
        model.unet(x, t, encoder_hidden_states=c)  # outside a job: runs
        token = CancelToken()
        token.cancel()
        with cancel_scope(token), pytest.raises(Interrupted, match="between network blocks"):
            model.unet(x, t, encoder_hidden_states=c)
        model.unet(x, t, encoder_hidden_states=c)  # the scope is over: runs again
