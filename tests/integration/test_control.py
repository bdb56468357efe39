"""Cancel, resume, fork, delete, introspection, retention and export through the public API (02 §3-§8, §10, §11)."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from conftest import wait_for
from dbos import DBOS, Queue, SetEnqueueOptions, SetWorkflowID
from dbos._dbos import current_engine
from dbos.error import (
    DBOSAwaitedWorkflowCancelledError,
    DBOSConflictingWorkflowError,
    DBOSNonExistentWorkflowError,
    DBOSValidationError,
)

counts: dict[str, int] = {}
gate = threading.Event()


def bump(key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


@DBOS.step()
def ctl_step(n: int) -> int:
    bump(f"step{n}")
    return n * 10


@DBOS.step()
def ctl_wait_step(n: int) -> int:
    bump(f"step{n}")
    gate.wait(30)
    return n * 10


@DBOS.workflow()
def four_steps() -> int:
    total = 0
    for n in (1, 2):
        total += ctl_step(n)
    total += ctl_wait_step(3)
    total += ctl_step(4)
    return total


@DBOS.workflow()
def ctl_sleeper(seconds: float) -> str:
    DBOS.sleep(seconds)
    return "slept"


@DBOS.workflow()
def ctl_tree(depth: int) -> str:
    if depth > 0:
        handles = [DBOS.start_workflow(ctl_tree, depth - 1) for _ in range(2 if depth == 2 else 1)]
        DBOS.sleep(0.6)
        return ",".join(h.get_result() for h in handles)
    DBOS.sleep(0.6)
    return "leaf"


def engine_running(wid: str) -> bool:
    return bool(current_engine().is_running_here(wid))


@pytest.fixture(autouse=True)
def _reset() -> Any:
    counts.clear()
    gate.set()
    yield
    gate.set()


# --- cancel ---------------------------------------------------------------------------------------------------


def test_cancel_then_resume_continues_from_checkpoint(dbos: Any) -> None:
    gate.clear()
    handle = DBOS.start_workflow(four_steps)
    wait_for(lambda: counts.get("step3") == 1, 5)
    DBOS.cancel_workflow(handle.workflow_id)
    assert handle.get_status().status == "CANCELLED"
    gate.set()  # the sync step in progress finishes; its checkpoint is kept, the next step does not run
    wait_for(lambda: not engine_running(handle.workflow_id), 5)
    assert "step4" not in counts
    with pytest.raises(DBOSAwaitedWorkflowCancelledError):
        handle.get_result()
    resumed = DBOS.resume_workflow(handle.workflow_id)
    assert resumed.get_result() == 100
    assert counts == {"step1": 1, "step2": 1, "step3": 1, "step4": 1}
    st = resumed.get_status()
    assert st.status == "SUCCESS" and st.recovery_attempts == 1 and st.queue_name is not None


def test_cancel_success_changes_nothing(dbos: Any) -> None:
    with SetWorkflowID("done-wf"):
        ctl_sleeper(0)
    before = DBOS.get_workflow_status("done-wf")
    DBOS.cancel_workflow("done-wf")
    DBOS.cancel_workflow("no-such-workflow")  # unknown IDs are ignored
    after = DBOS.get_workflow_status("done-wf")
    assert before is not None and after is not None
    assert (after.status, after.completed_at) == ("SUCCESS", before.completed_at)


def test_cancel_children(dbos: Any) -> None:
    with SetWorkflowID("tree-a"):
        root = DBOS.start_workflow(ctl_tree, 2)
    wait_for(lambda: len(DBOS.list_workflows(workflow_id_prefix="tree-a")) == 5, 5)
    DBOS.cancel_workflow("tree-a", cancel_children=True)
    statuses = {s.workflow_id: s.status for s in DBOS.list_workflows(workflow_id_prefix="tree-a")}
    assert set(statuses.values()) == {"CANCELLED"}, statuses
    with pytest.raises(DBOSAwaitedWorkflowCancelledError):
        root.get_result()

    with SetWorkflowID("tree-b"):
        DBOS.start_workflow(ctl_tree, 2)
    wait_for(lambda: len(DBOS.list_workflows(workflow_id_prefix="tree-b")) == 5, 5)
    DBOS.cancel_workflow("tree-b")
    children = DBOS.list_workflows(parent_workflow_id="tree-b")
    assert len(children) == 2
    for child in children:
        assert DBOS.retrieve_workflow(child.workflow_id).get_result() in ("leaf", "leaf,leaf")


blocked = Queue("ctl-blocked", concurrency=1)


@DBOS.workflow()
def ctl_blocker() -> str:
    gate.wait(30)
    return "unblocked"


def test_cancel_enqueued_never_runs_and_dedup_binding_stays(dbos: Any) -> None:
    gate.clear()
    block = blocked.enqueue(ctl_blocker)
    wait_for(lambda: block.get_status().status == "PENDING", 5)
    with SetEnqueueOptions(deduplication_id="dd-1"):
        queued = blocked.enqueue(ctl_step, 7)
    DBOS.cancel_workflow(queued.workflow_id)
    with SetEnqueueOptions(deduplication_id="dd-1"):
        again = blocked.enqueue(ctl_step, 7)
    assert again.workflow_id == queued.workflow_id
    gate.set()
    assert block.get_result() == "unblocked"
    time.sleep(0.3)
    assert queued.get_status().status == "CANCELLED" and "step7" not in counts


def test_resume_enqueued_bypasses_blocked_queue(dbos: Any) -> None:
    gate.clear()
    block = blocked.enqueue(ctl_blocker)
    wait_for(lambda: block.get_status().status == "PENDING", 5)
    queued = blocked.enqueue(ctl_step, 8)
    DBOS.resume_workflow(queued.workflow_id)
    assert queued.get_result() == 80
    st = queued.get_status()
    assert st.queue_name == "_dbos_internal_queue"
    gate.set()


def test_resume_errors(dbos: Any) -> None:
    with SetWorkflowID("exists"):
        ctl_sleeper(0)
    with pytest.raises(DBOSNonExistentWorkflowError):
        DBOS.resume_workflows(["exists", "missing"])
    st = DBOS.get_workflow_status("exists")
    assert st is not None and st.status == "SUCCESS"
    assert DBOS.resume_workflow("exists").get_result() == "slept"
    with pytest.raises(DBOSValidationError):
        DBOS.resume_workflows("exists")  # type: ignore[arg-type]
    with pytest.raises(DBOSValidationError):
        DBOS.cancel_workflows("exists")  # type: ignore[arg-type]


# --- fork -----------------------------------------------------------------------------------------------------


def test_fork_reruns_only_later_steps(dbos: Any) -> None:
    with SetWorkflowID("fork-src"):
        assert four_steps() == 100
    counts.clear()
    fork = DBOS.fork_workflow("fork-src", 3)
    assert fork.get_result() == 100
    assert counts == {"step3": 1, "step4": 1}
    st = fork.get_status()
    assert st.forked_from == "fork-src"
    src = DBOS.get_workflow_status("fork-src")
    assert src is not None and src.was_forked_from
    names = [s["function_name"] for s in DBOS.list_workflow_steps(fork.workflow_id)]
    assert len(names) >= 4
    counts.clear()
    assert DBOS.fork_workflow("fork-src", 1).get_result() == 100
    assert counts == {"step1": 1, "step2": 1, "step3": 1, "step4": 1}


def test_fork_is_idempotent_under_workflow_id(dbos: Any) -> None:
    with SetWorkflowID("fork-src2"):
        four_steps()
    counts.clear()
    with SetWorkflowID("f1"):
        a = DBOS.fork_workflow("fork-src2", 4)
    with SetWorkflowID("f1"):
        b = DBOS.fork_workflow("fork-src2", 4)
    assert a.workflow_id == b.workflow_id == "f1"
    assert a.get_result() == 100
    assert counts == {"step4": 1}
    with SetWorkflowID("fork-src2"):
        with pytest.raises(DBOSConflictingWorkflowError):
            DBOS.fork_workflow("f1", 1)


def test_fork_bad_input(dbos: Any) -> None:
    with SetWorkflowID("fork-src3"):
        ctl_sleeper(0)
    with pytest.raises(DBOSNonExistentWorkflowError):
        DBOS.fork_workflow("nope", 1)
    for bad in (0, -1, True, 1.5, "2"):
        with pytest.raises(DBOSValidationError):
            DBOS.fork_workflow("fork-src3", bad)  # type: ignore[arg-type]
    with pytest.raises(DBOSValidationError):
        DBOS.fork_workflow("fork-src3", 1, replacement_children=["x"])  # type: ignore[arg-type]
    with pytest.raises(DBOSValidationError):
        DBOS.fork_workflow("fork-src3", 1, timeout_seconds=0)


def test_fork_with_other_version_stays_enqueued(dbos: Any) -> None:
    with SetWorkflowID("fork-src4"):
        ctl_sleeper(0)
    pinned = DBOS.fork_workflow("fork-src4", 1, application_version="other-version")
    free = DBOS.fork_workflow("fork-src4", 1)
    assert free.get_result() == "slept"
    time.sleep(0.3)
    assert pinned.get_status().status == "ENQUEUED"


# --- delete ---------------------------------------------------------------------------------------------------


def test_delete(dbos: Any) -> None:
    with SetWorkflowID("del-1"):
        four_steps()
    DBOS.delete_workflow("del-1")
    assert DBOS.get_workflow_status("del-1") is None
    assert DBOS.list_workflow_steps("del-1") == []
    DBOS.delete_workflow("del-1")  # unknown now: ignored
    with SetWorkflowID("del-tree"):
        assert DBOS.start_workflow(ctl_tree, 2).get_result() == "leaf,leaf"
    assert len(DBOS.list_workflows(workflow_id_prefix="del-tree")) == 5
    DBOS.delete_workflow("del-tree", delete_children=True)
    assert DBOS.list_workflows(workflow_id_prefix="del-tree") == []


def test_delete_running_workflow_stops_it(dbos: Any) -> None:
    gate.clear()
    handle = DBOS.start_workflow(four_steps)
    wait_for(lambda: counts.get("step3") == 1, 5)
    DBOS.delete_workflow(handle.workflow_id)
    gate.set()
    wait_for(lambda: not engine_running(handle.workflow_id), 5)
    assert "step4" not in counts
    assert DBOS.get_workflow_status(handle.workflow_id) is None
    with pytest.raises(DBOSNonExistentWorkflowError):
        handle.get_result()


dedup_queue = Queue("ctl-dedup")


def test_delete_frees_dedup_id(dbos: Any) -> None:
    q = dedup_queue
    with SetEnqueueOptions(deduplication_id="dd-del"):
        first = q.enqueue(ctl_step, 1)
    first.get_result()
    DBOS.delete_workflow(first.workflow_id)
    with SetEnqueueOptions(deduplication_id="dd-del"):
        second = q.enqueue(ctl_step, 1)
    assert second.workflow_id != first.workflow_id
    assert second.get_result() == 10


# --- list_workflows and steps ---------------------------------------------------------------------------------


def test_list_workflows_filters_and_paging(dbos: Any) -> None:
    for i in range(12):
        with SetWorkflowID(f"lw-{i:02d}"):
            ctl_sleeper(0)
    every = DBOS.list_workflows(workflow_id_prefix="lw-")
    assert [s.workflow_id for s in every] == [f"lw-{i:02d}" for i in range(12)]
    assert DBOS.list_workflows(workflow_ids=[]) == []
    assert DBOS.list_workflows(workflow_id_prefix="%") == []
    assert [
        s.workflow_id for s in DBOS.list_workflows(workflow_id_prefix="lw-", sort_desc=True, limit=2)
    ] == [
        "lw-11",
        "lw-10",
    ]
    seen: list[str] = []
    cursor = None
    while True:
        page = DBOS.list_workflows(workflow_id_prefix="lw-", limit=5, cursor=cursor)
        seen += [s.workflow_id for s in page]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [s.workflow_id for s in every]
    assert DBOS.list_workflows(
        status="SUCCESS", name=ctl_sleeper.__qualname__, workflow_id_prefix="lw-", limit=50
    )
    assert DBOS.list_workflows(status=["ERROR"], workflow_id_prefix="lw-") == []
    no_input = DBOS.list_workflows(workflow_id_prefix="lw-", load_input=False, limit=1)
    assert no_input[0].input is None
    first = every[0]
    assert DBOS.list_workflows(start_time=datetime.fromtimestamp(first.created_at / 1000, timezone.utc))
    assert DBOS.list_workflows(end_time="2000-01-01T00:00:00Z") == []


def test_list_workflows_bad_input(dbos: Any) -> None:
    bad: list[dict[str, Any]] = [
        {"status": "DONE"},
        {"start_time": "yesterday"},
        {"limit": -1},
        {"offset": -2},
        {"cursor": "garbage"},
        {"nonsense_filter": 1},
    ]
    for kwargs in bad:
        with pytest.raises(DBOSValidationError):
            DBOS.list_workflows(**kwargs)
    with SetWorkflowID("lw-bad"):
        ctl_sleeper(0)
    with SetWorkflowID("lw-bad2"):
        ctl_sleeper(0)
    page = DBOS.list_workflows(workflow_id_prefix="lw-bad", limit=1)
    assert page.next_cursor is not None
    with pytest.raises(DBOSValidationError):
        DBOS.list_workflows(workflow_id_prefix="lw-bad", limit=1, cursor=page.next_cursor, offset=1)
    with pytest.raises(DBOSValidationError):
        DBOS.list_workflows(workflow_id_prefix="lw-", limit=1, cursor=page.next_cursor)  # other filters


def test_list_workflow_steps_kinds(dbos: Any) -> None:
    with SetWorkflowID("steps-wf"):
        four_steps()
    steps = DBOS.list_workflow_steps("steps-wf")
    assert [s["function_id"] for s in steps] == list(range(1, len(steps) + 1))
    assert steps[0]["output"] == 10 and steps[0]["error"] is None
    assert DBOS.list_workflow_steps("steps-wf", limit=1, offset=1)[0]["output"] == 20
    assert DBOS.list_workflow_steps("steps-wf", load_output=False)[0]["output"] is None
    assert DBOS.list_workflow_steps("missing") == []


# --- wait_first -----------------------------------------------------------------------------------------------


@DBOS.workflow()
def ctl_waits_first() -> str:
    hs = [DBOS.start_workflow(ctl_sleeper, s) for s in (0.5, 0.05, 0.3)]
    return str(DBOS.wait_first(hs).workflow_id)


def test_wait_first(dbos: Any) -> None:
    handles = [DBOS.start_workflow(ctl_sleeper, s) for s in (0.4, 0.05, 0.2)]
    first = DBOS.wait_first(handles)
    assert first is handles[1]
    with pytest.raises(DBOSValidationError):
        DBOS.wait_first([])
    with pytest.raises(DBOSValidationError):
        DBOS.wait_first([handles[0], handles[0]])
    with SetWorkflowID("wf-first"):
        chosen = ctl_waits_first()
    assert chosen == "wf-first-2"
    steps = DBOS.list_workflow_steps("wf-first")
    assert "DBOS.waitFirst" in [s["function_name"] for s in steps]


# --- checkpointed management calls inside workflows -----------------------------------------------------------


@DBOS.workflow()
def lists_then_sleeps() -> int:
    n = len(DBOS.list_workflows(workflow_id_prefix="ckpt-x"))
    DBOS.sleep(0.01)
    return n


def test_list_inside_workflow_is_replayed(dbos: Any) -> None:
    with SetWorkflowID("ckpt-xa"):
        ctl_sleeper(0)
    with SetWorkflowID("ckpt-lister"):
        assert lists_then_sleeps() == 1
    with SetWorkflowID("ckpt-xb"):
        ctl_sleeper(0)
    fork = DBOS.fork_workflow("ckpt-lister", 2)  # step 1 (the list) is replayed from its record
    assert fork.get_result() == 1
    names = [s["function_name"] for s in DBOS.list_workflow_steps("ckpt-lister")]
    assert names[0] == "DBOS.listWorkflows"


@DBOS.workflow()
def cancels_other(target: str) -> None:
    DBOS.cancel_workflow(target)


def test_cancel_inside_workflow_not_repeated_on_replay(dbos: Any) -> None:
    target = DBOS.start_workflow(ctl_sleeper, 30)
    with SetWorkflowID("canceller"):
        cancels_other(target.workflow_id)
    assert target.get_status().status == "CANCELLED"
    DBOS.resume_workflow(target.workflow_id)
    wait_for(lambda: target.get_status().status in ("PENDING", "ENQUEUED"), 2)
    DBOS.fork_workflow("canceller", 2).get_result()  # replays the recorded cancel: X is not cancelled again
    time.sleep(0.2)
    assert target.get_status().status != "CANCELLED"
    DBOS.cancel_workflow(target.workflow_id)


# --- garbage collection, export and import --------------------------------------------------------------------


def test_garbage_collect_keep_last(dbos: Any) -> None:
    for i in range(6):
        with SetWorkflowID(f"gc-{i}"):
            ctl_sleeper(0)
    gate.clear()
    pending = DBOS.start_workflow(four_steps)
    wait_for(lambda: counts.get("step3") == 1, 5)
    deleted = DBOS.garbage_collect(keep_last=3)
    remaining = {s.workflow_id for s in DBOS.list_workflows()}
    assert pending.workflow_id in remaining
    assert (
        deleted == 4
    )  # 6 + the pending one = 7 rows: the 3 newest are kept, the pending one is not terminal
    assert remaining == {"gc-4", "gc-5", pending.workflow_id}
    gate.set()
    assert pending.get_result() == 100
    with pytest.raises(DBOSValidationError):
        DBOS.garbage_collect()
    with pytest.raises(DBOSValidationError):
        DBOS.garbage_collect(keep_last=-1)
    with pytest.raises(DBOSValidationError):
        DBOS.garbage_collect(cutoff="yesterday")
    assert DBOS.garbage_collect(cutoff=timedelta(seconds=0)) >= 1


def test_export_import_roundtrip(dbos: Any, db_url: str, tmp_path: Any) -> None:
    with SetWorkflowID("exp-1"):
        four_steps()
    data = DBOS.export_workflow("exp-1")
    json.dumps(data)
    assert data["format"] == "dbos-workflow-export" and len(data["workflows"]) == 1
    with pytest.raises(DBOSConflictingWorkflowError):
        DBOS.import_workflow(data)
    with pytest.raises(DBOSNonExistentWorkflowError):
        DBOS.export_workflow("missing")
    with pytest.raises(DBOSValidationError):
        DBOS.import_workflow({"format": "other", "version": 1, "workflows": []})
    DBOS.delete_workflow("exp-1")
    assert DBOS.import_workflow(data) == ["exp-1"]
    assert DBOS.retrieve_workflow("exp-1").get_result() == 100
    assert len(DBOS.list_workflow_steps("exp-1")) == len(data["workflows"][0]["steps"])


def test_retention_removes_old_workflows(dbos_config: dict[str, Any]) -> None:
    DBOS.destroy()
    DBOS(config={**dbos_config, "retention_max_age_sec": 1, "retention_interval_sec": 1})  # type: ignore[typeddict-unknown-key]
    DBOS.launch()
    try:
        with SetWorkflowID("old-one"):
            ctl_sleeper(0)
        gate.clear()
        running = DBOS.start_workflow(four_steps)
        wait_for(lambda: DBOS.get_workflow_status("old-one") is None, 4)
        assert running.get_status().status == "PENDING"  # a running workflow is never collected
        gate.set()
        assert running.get_result() == 100
    finally:
        DBOS.destroy()


@pytest.mark.parametrize(
    "bad",
    [
        {"retention_max_age_sec": 0.5},
        {"retention_keep_last": -1},
        {"retention_interval_sec": 0},
        {"retention_keep_last": "3"},
    ],
)
def test_bad_retention_config(dbos_config: dict[str, Any], bad: dict[str, Any]) -> None:
    from dbos.error import DBOSInitializationError

    DBOS.destroy()
    with pytest.raises(DBOSInitializationError):
        DBOS(config={**dbos_config, **bad})  # type: ignore[typeddict-item]
    DBOS.destroy()


@pytest.fixture
def second_db_url(backend: str, tmp_path: Any) -> Any:
    from conftest import create_pg_database, drop_pg_database, pg_url_for

    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'second.sqlite'}"
        return
    name = create_pg_database()
    try:
        yield pg_url_for(name)
    finally:
        drop_pg_database(name)


def test_pending_export_completes_in_another_database(
    dbos: Any, dbos_config: dict[str, Any], second_db_url: str
) -> None:
    gate.clear()
    with SetWorkflowID("exp-pending"):
        DBOS.start_workflow(four_steps)
    wait_for(lambda: counts.get("step3") == 1, 5)
    data = DBOS.export_workflow("exp-pending")
    assert data["workflows"][0]["status"]["status"] == "PENDING"
    DBOS.destroy()  # the blocked execution in the first database is fenced off
    DBOS(config={**dbos_config, "system_database_url": second_db_url})  # type: ignore[typeddict-item]
    DBOS.launch()
    counts.clear()
    assert DBOS.import_workflow(data) == ["exp-pending"]
    gate.set()
    assert DBOS.retrieve_workflow("exp-pending").get_result() == 100
    assert counts == {"step3": 1, "step4": 1}  # steps 1 and 2 replayed from the imported checkpoints
    with pytest.raises(DBOSConflictingWorkflowError):
        DBOS.import_workflow(data)


@DBOS.workflow()
def ctl_noop() -> None:
    pass


def test_cursor_paging_over_1050_rows_with_inserts_and_deletes(dbos: Any) -> None:
    for i in range(1050):
        with SetWorkflowID(f"pg-{i:04d}"):
            ctl_noop()
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = DBOS.list_workflows(workflow_id_prefix="pg-", limit=100, cursor=cursor, load_input=False)
        seen += [s.workflow_id for s in page]
        pages += 1
        if pages == 2:
            with SetWorkflowID("pg-9999"):  # created later: appears on a later page
                ctl_noop()
            DBOS.delete_workflow(seen[0])  # already returned: later pages do not shift
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [f"pg-{i:04d}" for i in range(1050)] + ["pg-9999"]
    assert pages == 11
