"""Routing among Ray workers: a pure function of what each worker reports (no Ray needed)."""

from __future__ import annotations

from atelier.engine.distributed.routing import JobNeeds, WorkerView, route


def worker(
    name: str, models: tuple[str, ...] = (), signatures: tuple[str, ...] = (), load: int = 0
) -> WorkerView:
    return WorkerView(name, frozenset(models), frozenset(signatures), load)


def test_an_idle_worker_with_the_model_loaded_wins_over_an_idle_cold_one() -> None:
    needs = JobNeeds(frozenset({"a.safetensors"}))
    assert route(needs, [worker("w1"), worker("w2", ("a.safetensors",))]) == "w2"
    assert route(needs, [worker("w1", ("a.safetensors",)), worker("w2")]) == "w1"


def test_a_job_waits_behind_the_warm_worker_rather_than_load_its_model_on_another_busy_one() -> None:
    needs = JobNeeds(frozenset({"a.safetensors"}))
    warm_busy, cold_busy = worker("w1", ("a.safetensors",), load=1), worker("w2", ("b.safetensors",), load=1)
    assert route(needs, [cold_busy, warm_busy]) == "w1"


def test_an_idle_worker_beats_a_busy_warm_one_so_sweeps_fan_out() -> None:
    needs = JobNeeds(frozenset({"a.safetensors"}))
    assert route(needs, [worker("w1", ("a.safetensors",), load=1), worker("w2")]) == "w2"


def test_cached_upstream_results_break_ties_between_warm_workers() -> None:
    needs = JobNeeds(frozenset({"a.safetensors"}), frozenset({"s1", "s2", "s3", "s4"}))
    one = worker("w1", ("a.safetensors",), ("s1",))
    three = worker("w2", ("a.safetensors",), ("s1", "s2", "s3"))
    assert route(needs, [one, three]) == "w2"


def test_full_workers_take_nothing() -> None:
    needs = JobNeeds()
    assert route(needs, [worker("w1", load=2), worker("w2", load=2)], max_load=2) is None
    assert route(needs, [worker("w1", load=2), worker("w2", load=1)], max_load=2) == "w2"
    assert route(needs, []) is None


def test_the_store_requeues_a_job_in_its_place_and_counts_the_workers_that_died(tmp_path) -> None:
    from atelier.engine.server.store import Store

    store = Store(tmp_path / "a.db")
    for n in range(3):
        store.add_job(f"j{n}", {"nodes": {}}, {})
    first = store.next_queued()
    assert first is not None and first.id == "j0" and first.attempts == 0
    assert store.requeue("j0") == 1
    again = store.next_queued()
    assert again is not None and again.id == "j0" and again.attempts == 1  # first in line again
    assert store.requeue("j0", died=False) == 1
    store.next_queued()
    # a restart on a cluster re-queues what was running instead of failing it
    assert store.recover_after_restart(requeue=True) == ["j0"]
    assert store.get_job("j0").status == "queued"
    store.next_queued()
    assert store.recover_after_restart() == ["j0"] and store.get_job("j0").status == "interrupted"
