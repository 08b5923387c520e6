"""The one error type for unusable model files, shared by every reading, detection and loading step."""

from pathlib import Path


class CheckpointError(Exception):
    """A model file that cannot be used: names the file and says what is wrong with it.

    Callers (nodes, the CLI) show the message as it is, so it must name the file and the problem in words a
    user can act on; library errors are wrapped into it, never leaked."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
