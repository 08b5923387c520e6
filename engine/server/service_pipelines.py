"""The pipeline library over HTTP: list the pipelines, describe one's interface, run one with input values.

A pipeline runs like a function: its inputs are its parameters, given as a JSON object of values, and the
job is submitted through the jobs service like any other (so validation, the queue and events are the same).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from atelier.engine.pipeline import interface
from atelier.engine.pipeline_library import AlreadyInstalled, PipelineError
from atelier.engine.runtime import Engine

from .service_jobs import JobService, SubmitOutcome


@dataclass(frozen=True)
class NoSuchPipeline:
    message: str


@dataclass(frozen=True)
class NotInstalled:
    """A pipeline the library refused: ``conflict`` when that name and version is installed already."""

    message: str
    conflict: bool = False


class PipelineService:
    def __init__(self, engine: Engine, jobs: JobService) -> None:
        self.engine = engine
        self.jobs = jobs

    def list(self) -> list[dict[str, Any]]:
        """One row per pipeline name (its newest version described, every version listed)."""
        rows: dict[str, dict[str, Any]] = {}
        for entry in self.engine.pipelines.entries():
            row = rows.setdefault(entry.name, {"name": entry.name, "versions": []})
            row["versions"].append(str(entry.version))
            row.update(
                version=str(entry.version),
                title=entry.workflow.metadata.name or entry.name,
                description=entry.description,
                interface=interface(entry.workflow),
            )
        return list(rows.values())

    def get(self, name: str, version: str | None = None) -> dict[str, Any] | NoSuchPipeline:
        try:
            entry = self.engine.pipelines.get(name, version)
        except (LookupError, ValueError) as exc:
            return NoSuchPipeline(exc.args[0] if exc.args else str(exc))
        return {
            "name": entry.name,
            "version": str(entry.version),
            "interface": interface(entry.workflow),
            "workflow": entry.workflow.to_dict(),
        }

    def install(self, name: str, workflow: dict[str, Any]) -> dict[str, Any] | NotInstalled:
        """Write a pipeline into the user's library folder (the first of ``--pipelines-dir``, then
        ``./pipelines``) as ``NAME@VERSION.json``; an installed version is never replaced."""
        try:
            entry = self.engine.pipelines.install(workflow, name)
        except AlreadyInstalled as exc:
            return NotInstalled(str(exc), conflict=True)
        except PipelineError as exc:
            return NotInstalled(str(exc))
        return {
            "name": entry.name,
            "version": str(entry.version),
            "versions": [str(e.version) for e in self.engine.pipelines.versions(entry.name)],
            "interface": interface(entry.workflow),
        }

    def run(
        self,
        name: str,
        inputs: dict[str, Any],
        version: str | None = None,
        priority: int = 0,
        client_id: str | None = None,
    ) -> SubmitOutcome | NoSuchPipeline:
        try:
            entry = self.engine.pipelines.get(name, version)
        except (LookupError, ValueError) as exc:
            return NoSuchPipeline(exc.args[0] if exc.args else str(exc))
        return self.jobs.submit(
            entry.workflow.to_dict(),
            overrides=inputs,
            priority=priority,
            client_id=client_id,
            source="atelier",
        )
