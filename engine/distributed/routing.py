"""Where a queued job goes among Ray workers: a pure function of what each worker reports.

A worker that has the job's model files loaded saves a load (seconds to minutes); one whose cache holds the
job's upstream results saves their computation; a busy worker delays it by the job it runs. Between workers
equally busy, the warm one wins; an idle worker beats a busy warm one (so a seed sweep fans out), but a job
whose model is loaded only on a busy worker waits behind that worker's one job rather than load the model
on a second worker that is busy too. A worker holds at most ``max_load`` jobs (running and waiting).
"""

from __future__ import annotations

from dataclasses import dataclass

#: what a loaded model file is worth, in jobs waited behind
MODEL_WEIGHT = 2.0
#: what a job's upstream results all cached is worth
CACHE_WEIGHT = 1.5
#: what one job running or waiting on the worker costs
LOAD_WEIGHT = 3.0


@dataclass(frozen=True)
class WorkerView:
    name: str
    models: frozenset[str]
    signatures: frozenset[str]
    #: jobs running or waiting there
    load: int


@dataclass(frozen=True)
class JobNeeds:
    """The model files (by file name) and the node signatures a job's plan has."""

    models: frozenset[str] = frozenset()
    signatures: frozenset[str] = frozenset()


def score(needs: JobNeeds, worker: WorkerView) -> float:
    warm = len(needs.models & worker.models)
    cached = len(needs.signatures & worker.signatures) / len(needs.signatures) if needs.signatures else 0.0
    return MODEL_WEIGHT * warm + CACHE_WEIGHT * cached - LOAD_WEIGHT * worker.load


def route(needs: JobNeeds, workers: list[WorkerView], max_load: int = 2) -> str | None:
    """The name of the worker to send the job to, or None when every worker is full."""
    open_ = [w for w in workers if w.load < max_load]
    if not open_:
        return None
    return max(open_, key=lambda w: (score(needs, w), -w.load, w.name)).name
