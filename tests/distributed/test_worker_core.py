"""A Ray worker's job runner without Ray: events stream out, the result comes last, reports are true."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from atelier.engine import events as E
from atelier.engine.distributed.actor import WorkerCore
from atelier.engine.models.handles import ModelHandle
from atelier.engine.runtime import EngineConfig
from tests.server.harness import portrait, write_models


def core(tmp_path: Path) -> WorkerCore:
    models = write_models(tmp_path / "models")
    config = EngineConfig(
        device="cpu",
        models_dir=models,
        output_dir=tmp_path / "output",
        input_dir=tmp_path / "input",
        temp_dir=tmp_path / "temp",
    )
    return WorkerCore("w-test", config.model_dump(mode="json"), threads=1)


def test_a_job_streams_its_events_then_its_result_and_the_report_tells_what_is_loaded(tmp_path: Path) -> None:
    worker = core(tmp_path)
    assert worker.report()["models"] == [] and worker.report()["signatures"] == []
    request = portrait(seed=3)
    job = {"id": "j1", "workflow": request["workflow"], "overrides": request["overrides"], "previews": False}
    items = list(worker.run_jobs([job]))
    kinds = [k for k, _ in items]
    assert kinds[-1] == "result" and set(kinds[:-1]) == {"event"}
    events = [v for k, v in items if k == "event"]
    assert isinstance(events[0], E.JobStarted) and isinstance(events[-1], E.JobFinished)
    n, result = items[-1][1]
    assert n == 0 and result.ok and result.outputs
    files = [img["filename"] for out in result.outputs.values() for img in out.get("images", [])]
    assert files and all((tmp_path / "output" / f).is_file() for f in files)
    report = worker.report()
    assert report["models"] == ["tiny15.safetensors"] and report["running"] is None
    assert len(report["signatures"]) >= 5 and report["model_loads"] >= 1
    # the same job again is cached whole: the signatures reported are the ones it plans
    again = [v for k, v in worker.run_jobs([{**job, "id": "j2"}]) if k == "event"]
    assert any(isinstance(ev, E.NodeCached) for ev in again)
    assert not any(isinstance(ev, E.NodeStarted) for ev in again)


def test_interrupt_reaches_only_the_running_job(tmp_path: Path) -> None:
    worker = core(tmp_path)
    assert worker.interrupt("nothing-runs") is None
    request = portrait(seed=4, steps=6)
    stream = worker.run_jobs(
        [{"id": "j3", "workflow": request["workflow"], "overrides": request["overrides"]}]
    )
    first = next(stream)
    assert first[0] == "event"
    assert worker.interrupt("another-job") is None
    assert worker.interrupt("j3") == "j3"
    rest = list(stream)
    assert rest[-1][0] == "result" and rest[-1][1][1].status == "interrupted"


def _image(output: Path, result: Any) -> np.ndarray:
    (name,) = [img["filename"] for out in result.outputs.values() for img in out.get("images", [])]
    return np.asarray(Image.open(output / name).convert("RGB"), dtype=np.int16)


def test_jobs_sent_together_sample_as_one_batch_and_each_gets_its_lone_picture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    widths: list[int] = []
    forward = ModelHandle._forward

    def counted(self: ModelHandle, call: Any) -> Any:
        widths.append(call.x.shape[0])
        return forward(self, call)

    monkeypatch.setattr(ModelHandle, "_forward", counted)
    jobs = []
    for n, seed in enumerate((21, 22)):
        request = portrait(seed=seed, steps=2)
        jobs.append({"id": f"b{n}", "workflow": request["workflow"], "overrides": request["overrides"]})

    batched = core(tmp_path / "batched")
    items = list(batched.run_jobs(jobs))
    assert widths == [4, 4]  # two steps, cond and uncond of both jobs in each forward
    results = dict(v for k, v in items if k == "result")
    assert sorted(results) == [0, 1] and all(r.ok for r in results.values())
    events = [v for k, v in items if k == "event"]
    for job in ("b0", "b1"):
        mine = [ev for ev in events if ev.job == job]
        assert isinstance(mine[0], E.JobStarted) and isinstance(mine[-1], E.JobFinished)
        assert any(isinstance(ev, E.Progress) for ev in mine)
    assert batched.report()["running"] is None and batched.jobs_run == 2

    for n, job in enumerate(jobs):  # each alone, on a worker of its own: the same picture
        alone = core(tmp_path / f"alone{n}")
        ((_, result),) = [v for k, v in alone.run_jobs([job]) if k == "result"]
        a = _image(tmp_path / f"alone{n}" / "output", result)
        b = _image(tmp_path / "batched" / "output", results[n])
        assert np.abs(a - b).max() <= 1
    assert not np.array_equal(
        _image(tmp_path / "batched" / "output", results[0]),
        _image(tmp_path / "batched" / "output", results[1]),
    )


def test_interrupt_reaches_the_one_job_of_a_batch_it_names(tmp_path: Path) -> None:
    worker = core(tmp_path)
    jobs = []
    for n, seed in enumerate((31, 32)):
        request = portrait(seed=seed, steps=6)
        jobs.append({"id": f"i{n}", "workflow": request["workflow"], "overrides": request["overrides"]})
    stream = worker.run_jobs(jobs)
    for kind, value in stream:
        if kind == "event" and isinstance(value, E.Progress):
            break
    assert worker.interrupt("i1") == "i1"
    results = dict(v for k, v in stream if k == "result")
    assert results[1].status == "interrupted" and results[0].ok
