"""The command line: run with --set/--sweep/--events, validate, nodes."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from atelier.engine import cli, runtime
from atelier.engine.registry import Registry
from tests.engine.toy_nodes import RUNS, TOY_TYPES, link, wf


@pytest.fixture(autouse=True)
def toy_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    def toy_engine(config: runtime.EngineConfig, **_: object) -> runtime.Engine:
        return runtime.build_engine(config, registry=Registry(TOY_TYPES), plugins=[])

    monkeypatch.setattr(cli, "build_engine", toy_engine)
    RUNS.clear()


def write(tmp_path: Path, data: dict, name: str = "w.json") -> str:
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return str(p)


def sample() -> dict:
    return wf(
        {
            "t": {"type": "Text", "inputs": {"text": "ab", "repeat": 1}},
            "n": {"type": "Number", "inputs": {"value": 1}},
            "s": {"type": "Scale", "inputs": {"x": link("n"), "factor": 2, "mode": "multiply"}},
            "o": {"type": "Sink", "inputs": {"value": link("s")}},
            "o2": {"type": "Sink", "inputs": {"value": link("t"), "label": "text"}},
        },
        parameters={
            "seed": {"type": "INT", "default": 1, "targets": ["t.repeat"]},
            "start": {"type": "FLOAT", "default": 1, "targets": ["n.value"]},
        },
    )


def events_of(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_run_with_events_on_stdout_and_sweep_shares_the_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = write(tmp_path, sample())
    rc = cli.main(
        [
            "run",
            path,
            "--sweep",
            "seed=1,2,3",
            "--set",
            "start=5",
            "--events",
            "-",
            "--output-dir",
            str(tmp_path / "o"),
        ]
    )
    assert rc == 0
    evs = events_of(capsys.readouterr().out)
    jobs = [e for e in evs if e["type"] == "job_finished"]
    assert len(jobs) == 3
    # the numeric branch ran once; each sweep point re-ran only the text branch
    assert RUNS["n"] == 1 and RUNS["s"] == 1 and RUNS["t"] == 3
    finals = [e["outputs"] for e in jobs]
    assert [f["o2"]["value"][0] for f in finals] == ["ab", "abab", "ababab"]
    assert all(f["o"]["value"][0] == 10.0 for f in finals)


def test_sweep_over_node_input_and_product_of_two_sweeps(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = write(tmp_path, sample())
    rc = cli.main(["run", path, "--sweep", "s.factor=1,2", "--sweep", "seed=1,2", "--events", "-"])
    assert rc == 0
    evs = events_of(capsys.readouterr().out)
    assert len([e for e in evs if e["type"] == "job_finished"]) == 4


def test_events_to_a_file_and_human_output(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write(tmp_path, sample())
    ev_file = tmp_path / "events.jsonl"
    assert cli.main(["run", path, "--events", str(ev_file)]) == 0
    human = capsys.readouterr().out
    assert "ran    s (Scale)" in human and "done in" in human
    types = [e["type"] for e in events_of(ev_file.read_text())]
    assert types[0] == "job_started" and types[-1] == "job_finished"


def test_run_failures_exit_nonzero(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    w = sample()
    w["nodes"]["f"] = {"type": "Fail", "inputs": {"x": link("s"), "message": "nope"}}
    w["nodes"]["o"]["inputs"]["value"] = link("f")
    assert cli.main(["run", write(tmp_path, w), "--events", "-"]) == 1
    captured = capsys.readouterr()
    assert any(e["type"] == "node_failed" and e["node"] == "f" for e in events_of(captured.out))
    assert "nope" in captured.err
    assert cli.main(["run", write(tmp_path, sample()), "--set", "seed=abc"]) == 2
    assert "not an integer" in capsys.readouterr().err
    assert cli.main(["run", str(tmp_path / "missing.json")]) == 2


def test_validate_prints_one_error_per_line_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    w = sample()
    w["nodes"]["s"]["inputs"]["factor"] = 999
    w["nodes"]["t"]["inputs"]["text"] = 4
    path = write(tmp_path, w)
    assert cli.main(["validate", path]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert any("[out_of_range]" in line and "node s (Scale)" in line for line in lines)
    assert cli.main(["validate", path, "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert sorted(e["code"] for e in report["errors"]) == ["invalid_type", "out_of_range"]
    assert cli.main(["validate", write(tmp_path, sample(), "ok.json")]) == 0
    assert "ok" in capsys.readouterr().out


def test_nodes_lists_and_describes(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["nodes", "--json"]) == 0
    desc = json.loads(capsys.readouterr().out)
    assert desc["Scale"]["version"] == "1.2.0"
    factor = next(i for i in desc["Scale"]["inputs"] if i["name"] == "factor")
    assert factor == {
        "name": "factor",
        "type": "FLOAT",
        "optional": False,
        "widget": True,
        "default": 1.0,
        "min": -100,
        "max": 100,
        "step": 0.01,
    }
    assert cli.main(["nodes", "Scale"]) == 0
    assert "choices: multiply, divide" in capsys.readouterr().out
    assert cli.main(["nodes", "Nope"]) == 1


def test_split_sweep_honours_escaped_commas() -> None:
    assert cli.split_sweep(r"a,b\,c,d") == ["a", "b,c", "d"]


class SlowWarmup(runtime.Plugin):
    """A warm-up step slower than the job (as importing the model libraries is for a toy job)."""

    def __init__(self) -> None:
        self.done = threading.Event()

    def warmup(self, engine: runtime.Engine, long_lived: bool = True) -> list[tuple[str, object]]:
        def step() -> None:
            time.sleep(0.5)
            self.done.set()

        return [("slow", step)] if not long_lived else []


def test_the_warm_up_ends_with_the_command_and_does_not_start_for_a_refused_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A command-line run warms up beside its jobs but returns only once the warm-up has ended: an import
    left running on a thread would race the caller's own imports (engine/models/libraries.py)."""
    plugin = SlowWarmup()
    monkeypatch.setattr(
        cli,
        "build_engine",
        lambda config, **_: runtime.build_engine(config, registry=Registry(TOY_TYPES), plugins=[plugin]),
    )
    assert cli.main(["run", write(tmp_path, sample()), "--set", "seed=abc"]) == 2
    assert not [t for t in threading.enumerate() if t.name == "atelier-warmup"]  # refused: nothing started
    assert cli.main(["run", write(tmp_path, sample()), "-q"]) == 0
    assert plugin.done.is_set()
    assert not [t for t in threading.enumerate() if t.name == "atelier-warmup"]
