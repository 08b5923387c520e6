"""A Ray worker's job runner without Ray: events stream out, the result comes last, reports are true."""

from __future__ import annotations

from pathlib import Path

from atelier.engine import events as E
from atelier.engine.distributed.actor import WorkerCore
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
    items = list(worker.run_job(job))
    kinds = [k for k, _ in items]
    assert kinds[-1] == "result" and set(kinds[:-1]) == {"event"}
    events = [v for k, v in items if k == "event"]
    assert isinstance(events[0], E.JobStarted) and isinstance(events[-1], E.JobFinished)
    result = items[-1][1]
    assert result.ok and result.outputs
    files = [img["filename"] for out in result.outputs.values() for img in out.get("images", [])]
    assert files and all((tmp_path / "output" / f).is_file() for f in files)
    report = worker.report()
    assert report["models"] == ["tiny15.safetensors"] and report["running"] is None
    assert len(report["signatures"]) >= 5 and report["model_loads"] >= 1
    # the same job again is cached whole: the signatures reported are the ones it plans
    again = [v for k, v in worker.run_job({**job, "id": "j2"}) if k == "event"]
    assert any(isinstance(ev, E.NodeCached) for ev in again)
    assert not any(isinstance(ev, E.NodeStarted) for ev in again)


def test_interrupt_reaches_only_the_running_job(tmp_path: Path) -> None:
    worker = core(tmp_path)
    assert worker.interrupt("nothing-runs") is None
    request = portrait(seed=4, steps=6)
    stream = worker.run_job({"id": "j3", "workflow": request["workflow"], "overrides": request["overrides"]})
    first = next(stream)
    assert first[0] == "event"
    assert worker.interrupt("another-job") is None
    assert worker.interrupt("j3") == "j3"
    rest = list(stream)
    assert rest[-1][0] == "result" and rest[-1][1].status == "interrupted"
