"""How many cases the reliability suite's fuzzers run: a few hundred in the default suite, thousands with
``--runslow`` (set by this folder's conftest before the test modules are imported)."""

from __future__ import annotations

SLOW = False

#: examples per fuzzed API operation, and for each workflow-submission property
DEFAULT = {"operation": 6, "submission": 80, "values": 150}
RUNSLOW = {"operation": 100, "submission": 1500, "values": 3000}


def examples(kind: str) -> int:
    return (RUNSLOW if SLOW else DEFAULT)[kind]
