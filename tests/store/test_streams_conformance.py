"""Conformance of the stream methods of the `SystemStore` (04 §8-§11; 07 §2.2 notes 3-4, §3.2 rule 6).

Runs on both backends: `write_stream` (gapless offsets, exact round-trips, the end marker, writes after the end,
checkpoints and fencing, step-write idempotency by `step_seq`, concurrent writers) and `read_stream` (paging,
`from_offset`, the end offset, the writer's state), change notifications, deletion, forks and validation.
Stored rows are observed through the protocol: `read_stream`, `list_steps` and `export_workflows` (which exports
every stream row, end markers included).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from store_kit import Recorder, new_wf, pending, token

from dbos._store.base import (
    Change,
    ClaimRequest,
    Fence,
    ForkSpec,
    NewStep,
    Outcome,
    Payload,
    StreamRead,
    StreamWrite,
    SystemStore,
    Write,
    digest,
)
from dbos.error import DBOSValidationError


def write_step(step_id: int, write_token: str | None = None) -> NewStep:
    return NewStep(step_id, "DBOS.writeStream", None, None, write_token or token())


def close_step(step_id: int, write_token: str | None = None) -> NewStep:
    return NewStep(step_id, "DBOS.closeStream", None, None, write_token or token())


def j(text: str) -> Payload:
    return Payload(text, "json")


def put(
    store: SystemStore,
    fence: Fence,
    key: str,
    value: Payload | None,
    *,
    writer_step_id: int = 1,
    step_seq: int | None = None,
    checkpoint: NewStep | None = None,
) -> StreamWrite:
    return store.write_stream(
        fence, key, value, writer_step_id=writer_step_id, step_seq=step_seq, checkpoint=checkpoint
    )


def close(store: SystemStore, fence: Fence, key: str, **kw: Any) -> StreamWrite:
    return put(store, fence, key, None, **kw)


def read_all(
    store: SystemStore, workflow_id: str, key: str, *, page: int = 1000
) -> list[tuple[int, Payload]]:
    """Every value of the stream, read in pages of `page` from offset 0."""
    out: list[tuple[int, Payload]] = []
    while True:
        r = store.read_stream(workflow_id, key, from_offset=len(out), limit=page)
        assert len(r.values) <= page
        out.extend(r.values)
        if len(r.values) < page:
            return out


def exported_streams(store: SystemStore, workflow_id: str) -> list[dict[str, Any]]:
    bundle = store.export_workflows([workflow_id], include_children=False)
    assert len(bundle) == 1
    return list(bundle[0]["streams"])


def rows_of(store: SystemStore, workflow_id: str, key: str) -> list[dict[str, Any]]:
    """The stored rows of one stream, end marker included, by offset."""
    rows = [r for r in exported_streams(store, workflow_id) if r["key"] == key]
    return sorted(rows, key=lambda r: int(r["stream_offset"]))


# ---------------------------------------------------------------------------------------------------------------
# Offsets and round-trips
# ---------------------------------------------------------------------------------------------------------------


def test_thousand_writes_are_gapless_and_read_in_pages(store: SystemStore) -> None:
    f = pending(store, "s-1000")
    for i in range(1000):
        r = put(store, f, "k", j(str(i)), writer_step_id=1 + i, checkpoint=write_step(1 + i))
        assert r == StreamWrite(Write.APPLIED, i, False)
    want = [(i, j(str(i))) for i in range(1000)]
    assert read_all(store, "s-1000", "k", page=128) == want
    assert read_all(store, "s-1000", "k", page=1)[:5] == want[:5]
    full = store.read_stream("s-1000", "k", from_offset=0)  # the default limit is 1000
    assert full.values == want and full.end_offset is None
    mid = store.read_stream("s-1000", "k", from_offset=500, limit=10)
    assert mid.values == want[500:510] and mid.end_offset is None
    assert [s.step_id for s in store.list_steps("s-1000")] == list(range(1, 1001))


def test_values_round_trip_exactly_and_do_not_close(store: SystemStore) -> None:
    f = pending(store, "s-rt")
    values = [
        j('"__DBOS_STREAM_CLOSED__"'),
        Payload("__DBOS_STREAM_CLOSED__", "json"),
        j("null"),  # a serialized None
        Payload("gASVAgAAAAAAAABOLg==", "pickle"),  # a serializer-specific text of None
        Payload("", "json"),
        j('"\U0001f600 \\u0000 tab\there\nnewline"'),
        Payload("x" * 100_000, "custom"),
    ]
    for i, v in enumerate(values):
        assert put(store, f, "k", v) == StreamWrite(Write.APPLIED, i, False)
    r = store.read_stream("s-rt", "k", from_offset=0)
    assert r.values == list(enumerate(values))
    assert r.end_offset is None
    assert r.writer.exists and r.writer.status == "PENDING"
    assert all(not row["is_end"] for row in rows_of(store, "s-rt", "k"))


def test_keys_are_independent_streams(store: SystemStore) -> None:
    f = pending(store, "s-keys")
    g = pending(store, "s-keys-2")
    assert put(store, f, "a", j("1")).offset == 0
    assert put(store, f, "b", j("2")).offset == 0
    assert put(store, f, "", j("3")).offset == 0  # the empty key is a key
    assert put(store, f, "a", j("4")).offset == 1
    assert put(store, g, "a", j("5")).offset == 0  # same key, another workflow
    assert close(store, f, "b").offset == 1
    assert store.read_stream("s-keys", "a", from_offset=0).values == [(0, j("1")), (1, j("4"))]
    b = store.read_stream("s-keys", "b", from_offset=0)
    assert b.values == [(0, j("2"))] and b.end_offset == 1
    e = store.read_stream("s-keys", "", from_offset=0)
    assert e.values == [(0, j("3"))] and e.end_offset is None
    assert store.read_stream("s-keys-2", "a", from_offset=0).values == [(0, j("5"))]
    assert store.read_stream("s-keys", "never", from_offset=0) == StreamRead(
        [], None, store.read_stream("s-keys", "a", from_offset=0).writer
    )


def test_stored_rows(store: SystemStore) -> None:
    f = pending(store, "s-rows")
    put(store, f, "k", Payload("raw", "pickle"), writer_step_id=3, step_seq=0)
    put(store, f, "k", j("2"), writer_step_id=4, checkpoint=write_step(4))
    close(store, f, "k", writer_step_id=5, checkpoint=close_step(5))
    rows = rows_of(store, "s-rows", "k")
    got = [
        (r["stream_offset"], r["value"], r["serializer"], r["is_end"], r["writer_step_id"], r["step_seq"])
        for r in rows
    ]
    assert got == [
        (0, "raw", "pickle", False, 3, 0),
        (1, "2", "json", False, 4, None),
        (2, None, None, True, 5, None),  # the end marker: is_end, value NULL (07 §3.2 rule 6)
    ]
    assert all(r["key_digest"] == digest("k") for r in rows)
    assert all(isinstance(r["created_at"], int) for r in rows)


# ---------------------------------------------------------------------------------------------------------------
# The end marker
# ---------------------------------------------------------------------------------------------------------------


def test_close_writes_end_marker_at_next_offset(store: SystemStore) -> None:
    f = pending(store, "s-close")
    for i in range(3):
        put(store, f, "k", j(str(i)))
    assert close(store, f, "k") == StreamWrite(Write.APPLIED, 3, False)
    r = store.read_stream("s-close", "k", from_offset=0)
    assert r.values == [(0, j("0")), (1, j("1")), (2, j("2"))]
    assert r.end_offset == 3
    # Paging stops before the marker; from_offset at or past it gives no values but still the end.
    assert store.read_stream("s-close", "k", from_offset=1, limit=1).values == [(1, j("1"))]
    tail = store.read_stream("s-close", "k", from_offset=2, limit=10)
    assert tail.values == [(2, j("2"))] and tail.end_offset == 3
    for start in (3, 4, 1000):
        past = store.read_stream("s-close", "k", from_offset=start)
        assert past.values == [] and past.end_offset == 3


def test_write_after_close_writes_nothing(store: SystemStore) -> None:
    f = pending(store, "s-after")
    put(store, f, "k", j("0"))
    close(store, f, "k")
    assert put(store, f, "k", j("late")) == StreamWrite(Write.APPLIED, None, True)
    assert put(store, f, "k", j("late"), writer_step_id=7, step_seq=0) == StreamWrite(
        Write.APPLIED, None, True
    )
    # With a checkpoint: refused, and the checkpoint is not recorded either ("nothing written").
    assert put(store, f, "k", j("late"), writer_step_id=8, checkpoint=write_step(8)) == StreamWrite(
        Write.APPLIED, None, True
    )
    assert store.list_steps("s-after") == []
    assert len(rows_of(store, "s-after", "k")) == 2
    r = store.read_stream("s-after", "k", from_offset=0)
    assert r.values == [(0, j("0"))] and r.end_offset == 1


def test_double_close_is_a_noop(store: SystemStore) -> None:
    f = pending(store, "s-dclose")
    put(store, f, "k", j("0"))
    assert close(store, f, "k").offset == 1
    assert close(store, f, "k") == StreamWrite(Write.APPLIED, None, True)
    assert close(store, f, "k", writer_step_id=9, checkpoint=close_step(9)) == StreamWrite(
        Write.APPLIED, None, True
    )
    assert close(store, f, "k", writer_step_id=10, step_seq=0) == StreamWrite(Write.APPLIED, None, True)
    assert [r["is_end"] for r in rows_of(store, "s-dclose", "k")] == [False, True]
    assert store.read_stream("s-dclose", "k", from_offset=0).end_offset == 1


def test_close_of_never_written_stream(store: SystemStore) -> None:
    f = pending(store, "s-empty")
    assert close(store, f, "k", writer_step_id=2, checkpoint=close_step(2, "t")) == StreamWrite(
        Write.APPLIED, 0, False
    )
    r = store.read_stream("s-empty", "k", from_offset=0)
    assert r.values == [] and r.end_offset == 0 and r.writer.exists
    assert [(s.step_id, s.name, s.write_token) for s in store.list_steps("s-empty")] == [
        (2, "DBOS.closeStream", "t")
    ]


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints and fencing
# ---------------------------------------------------------------------------------------------------------------


def test_checkpoint_applied_replay_and_conflict(store: SystemStore) -> None:
    f = pending(store, "s-cp")
    cp = write_step(1, "tok-1")
    assert put(store, f, "k", j('"v"'), checkpoint=cp) == StreamWrite(Write.APPLIED, 0, False)
    assert [(s.step_id, s.name, s.write_token) for s in store.list_steps("s-cp")] == [
        (1, "DBOS.writeStream", "tok-1")
    ]
    # The same logical write again (an ambiguous retry): APPLIED, nothing new.
    again = put(store, f, "k", j('"v"'), checkpoint=cp)
    assert again.write is Write.APPLIED and again.offset is None and not again.closed
    # Another writer's token for the same step: CONFLICT, nothing written.
    other = put(store, f, "k", j('"other"'), checkpoint=write_step(1, "tok-2"))
    assert other.write is Write.CONFLICT and other.offset is None and not other.closed
    # A recorded close checkpoint is not closed again.
    ccp = close_step(2, "tok-c")
    assert close(store, f, "k", writer_step_id=2, checkpoint=ccp).offset == 1
    replay = close(store, f, "k", writer_step_id=2, checkpoint=ccp)
    assert replay.write is Write.APPLIED and replay.offset is None
    assert close(store, f, "k", writer_step_id=2, checkpoint=close_step(2, "tok-x")).write is Write.CONFLICT
    r = store.read_stream("s-cp", "k", from_offset=0)
    assert r.values == [(0, j('"v"'))] and r.end_offset == 1
    assert [s.write_token for s in store.list_steps("s-cp")] == ["tok-1", "tok-c"]
    assert len(rows_of(store, "s-cp", "k")) == 2


def test_checkpoint_recorded_elsewhere_is_respected(store: SystemStore) -> None:
    f = pending(store, "s-cp2")
    cp = write_step(3, "tok")
    assert store.record_step(f, cp) is Write.APPLIED
    r = put(store, f, "k", j("1"), writer_step_id=3, checkpoint=cp)
    assert r.write is Write.APPLIED and r.offset is None
    assert put(store, f, "k", j("1"), writer_step_id=3, checkpoint=write_step(3)).write is Write.CONFLICT
    assert rows_of(store, "s-cp2", "k") == []


def test_fenced_writes_nothing(store: SystemStore) -> None:
    pending(store, "s-fenced")
    rec = Recorder()
    store.changes.subscribe(rec)
    stale = Fence("s-fenced", "not-the-token")
    for kw in ({}, {"checkpoint": write_step(1)}, {"step_seq": 0}):
        r = put(store, stale, "k", j("1"), **kw)
        assert r.write is Write.FENCED and r.offset is None and not r.closed, kw
        c = close(store, stale, "k", **kw)
        assert c.write is Write.FENCED and c.offset is None, kw
    gone = Fence("no-such-workflow", "t")
    assert put(store, gone, "k", j("1")).write is Write.FENCED
    assert close(store, gone, "k", checkpoint=close_step(1)).write is Write.FENCED
    assert exported_streams(store, "s-fenced") == [] and store.list_steps("s-fenced") == []
    assert [c for c in rec.seen() if c.kind == "stream"] == []


def test_stale_fence_after_reclaim(store: SystemStore) -> None:
    store.insert_workflow(new_wf("s-q", status="ENQUEUED", queue_name="sq"))

    def claim() -> Fence:
        req = ClaimRequest("sq", "exec-a", 1, None, None, frozenset({"wf"}), 1, token())
        return store.claim(req).claimed[0].fence

    f1 = claim()
    assert put(store, f1, "k", j("a"), checkpoint=write_step(1)).offset == 0
    assert store.release([f1], refund_attempt=False) == ["s-q"]
    f2 = claim()
    assert f2.claim_token != f1.claim_token
    assert put(store, f1, "k", j("stale"), writer_step_id=2, checkpoint=write_step(2)).write is Write.FENCED
    assert put(store, f1, "k", j("stale"), writer_step_id=2, step_seq=0).write is Write.FENCED
    assert close(store, f1, "k").write is Write.FENCED
    assert read_all(store, "s-q", "k") == [(0, j("a"))]
    assert put(store, f2, "k", j("b"), writer_step_id=2, checkpoint=write_step(2)).offset == 1
    assert read_all(store, "s-q", "k") == [(0, j("a")), (1, j("b"))]
    assert store.read_stream("s-q", "k", from_offset=0).end_offset is None


# ---------------------------------------------------------------------------------------------------------------
# Step writes (step_seq)
# ---------------------------------------------------------------------------------------------------------------


def test_step_seq_is_idempotent(store: SystemStore) -> None:
    f = pending(store, "s-seq")
    assert put(store, f, "k", j("0"), writer_step_id=5, step_seq=0) == StreamWrite(Write.APPLIED, 0, False)
    assert put(store, f, "k", j("1"), writer_step_id=5, step_seq=1) == StreamWrite(Write.APPLIED, 1, False)
    # A retried step writes the same (step, key, k) again: a no-op returning that row's offset.
    assert put(store, f, "k", j("0"), writer_step_id=5, step_seq=0) == StreamWrite(Write.APPLIED, 0, False)
    assert put(store, f, "k", j("1-other"), writer_step_id=5, step_seq=1) == StreamWrite(
        Write.APPLIED, 1, False
    )
    # Another step, another key, or a write without step_seq is distinct.
    assert put(store, f, "k", j("x"), writer_step_id=6, step_seq=0).offset == 2
    assert put(store, f, "other", j("y"), writer_step_id=5, step_seq=0).offset == 0
    assert put(store, f, "k", j("z"), writer_step_id=5).offset == 3
    assert put(store, f, "k", j("z"), writer_step_id=5).offset == 4  # no step_seq: no deduplication
    assert store.read_stream("s-seq", "k", from_offset=0).values == [
        (0, j("0")),
        (1, j("1")),
        (2, j("x")),
        (3, j("z")),
        (4, j("z")),
    ]
    assert len(rows_of(store, "s-seq", "k")) == 5


def test_step_seq_repeat_after_close_returns_its_offset(store: SystemStore) -> None:
    f = pending(store, "s-seq-close")
    assert put(store, f, "k", j("0"), writer_step_id=2, step_seq=0).offset == 0
    assert close(store, f, "k", writer_step_id=2, step_seq=1) == StreamWrite(Write.APPLIED, 1, False)
    # The existing (step, key, step_seq) is found before the end marker is considered.
    assert put(store, f, "k", j("0"), writer_step_id=2, step_seq=0) == StreamWrite(Write.APPLIED, 0, False)
    assert close(store, f, "k", writer_step_id=2, step_seq=1) == StreamWrite(Write.APPLIED, 1, False)
    # A new step write is refused.
    assert put(store, f, "k", j("new"), writer_step_id=2, step_seq=2) == StreamWrite(
        Write.APPLIED, None, True
    )
    r = store.read_stream("s-seq-close", "k", from_offset=0)
    assert r.values == [(0, j("0"))] and r.end_offset == 1


# ---------------------------------------------------------------------------------------------------------------
# Concurrency
# ---------------------------------------------------------------------------------------------------------------


def test_concurrent_writers_get_gapless_distinct_offsets(store: SystemStore, peer: SystemStore) -> None:
    f = pending(store, "s-conc")
    n = 250
    barrier = threading.Barrier(4)
    results: dict[int, list[int]] = {i: [] for i in range(4)}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            s = store if i % 2 == 0 else peer
            barrier.wait()
            for k in range(n):
                value = j(f'"{i}-{k}"')
                if i < 2:  # body writes: one checkpoint each
                    sid = 1 + i * n + k
                    r = put(s, f, "k", value, writer_step_id=sid, checkpoint=write_step(sid))
                else:  # writes from a step
                    r = put(s, f, "k", value, writer_step_id=10_000 + i, step_seq=k)
                assert r.write is Write.APPLIED and r.offset is not None and not r.closed
                results[i].append(r.offset)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    offsets = sorted(o for r in results.values() for o in r)
    assert offsets == list(range(4 * n))
    values = read_all(store, "s-conc", "k", page=300)
    assert [o for o, _ in values] == list(range(4 * n))
    by_offset = dict(values)
    for i, mine in results.items():
        assert mine == sorted(mine)  # each writer's values in its own order
        assert [by_offset[o].text for o in mine] == [f'"{i}-{k}"' for k in range(n)]
    assert len(store.list_steps("s-conc")) == 2 * n


# ---------------------------------------------------------------------------------------------------------------
# read_stream: the writer's state
# ---------------------------------------------------------------------------------------------------------------


def test_read_stream_writer_state(store: SystemStore) -> None:
    ghost = store.read_stream("no-such-workflow", "k", from_offset=0)
    assert ghost.values == [] and ghost.end_offset is None
    assert not ghost.writer.exists and ghost.writer.status is None
    f = pending(store, "s-state")
    empty = store.read_stream("s-state", "k", from_offset=0)
    assert empty.values == [] and empty.end_offset is None
    assert empty.writer.exists and empty.writer.status == "PENDING"
    put(store, f, "k", j("1"))
    assert store.record_outcome(f, Outcome("SUCCESS", j("1"))).applied
    done = store.read_stream("s-state", "k", from_offset=0)
    assert done.values == [(0, j("1"))] and done.end_offset is None
    assert done.writer.exists and done.writer.status == "SUCCESS" and done.writer.completed_at is not None
    past = store.read_stream("s-state", "k", from_offset=5)
    assert past.values == [] and past.end_offset is None and past.writer.status == "SUCCESS"
    store.insert_workflow(new_wf("s-queued", status="ENQUEUED", queue_name="q"))
    assert store.read_stream("s-queued", "k", from_offset=0).writer.status == "ENQUEUED"


def test_from_offset_beyond_an_open_stream(store: SystemStore) -> None:
    f = pending(store, "s-beyond")
    for i in range(5):
        put(store, f, "k", j(str(i)))
    assert store.read_stream("s-beyond", "k", from_offset=5).values == []
    assert store.read_stream("s-beyond", "k", from_offset=50).values == []
    assert store.read_stream("s-beyond", "k", from_offset=4).values == [(4, j("4"))]
    put(store, f, "k", j("5"))
    assert store.read_stream("s-beyond", "k", from_offset=5).values == [(5, j("5"))]


# ---------------------------------------------------------------------------------------------------------------
# Change notifications
# ---------------------------------------------------------------------------------------------------------------


def test_write_emits_stream_in_process_and_to_peer(store: SystemStore, peer: SystemStore) -> None:
    f = pending(store, "s-n")
    local, remote = Recorder(), Recorder()
    store.changes.subscribe(local)
    peer.changes.subscribe(remote)
    put(store, f, "key", j("1"))
    put(store, f, "", j("2"), writer_step_id=2, checkpoint=write_step(2))
    close(store, f, "closed", writer_step_id=3, step_seq=0)
    for key in ("key", "", "closed"):
        change = Change("stream", ("s-n", digest(key)))
        assert change in local.seen(), change  # delivered before the call returned
        assert remote.wait_for(lambda c, ch=change: c == ch), change


# ---------------------------------------------------------------------------------------------------------------
# Lifecycle: delete and fork
# ---------------------------------------------------------------------------------------------------------------


def test_deleted_workflow_loses_streams(store: SystemStore) -> None:
    f = pending(store, "s-del")
    put(store, f, "k", j("1"))
    close(store, f, "k")
    assert store.delete_workflows(["s-del"], delete_children=False) == ["s-del"]
    gone = store.read_stream("s-del", "k", from_offset=0)
    assert gone.values == [] and gone.end_offset is None and not gone.writer.exists
    assert put(store, f, "k", j("late")).write is Write.FENCED
    again = pending(store, "s-del")  # re-creating the ID starts with no streams
    assert store.read_stream("s-del", "k", from_offset=0).values == []
    assert put(store, again, "k", j("new")).offset == 0


def test_fork_copies_entries_before_start_step(store: SystemStore) -> None:
    f = pending(store, "s-src")
    for sid in (1, 2, 3):
        put(store, f, "k", j(str(sid)), writer_step_id=sid, checkpoint=write_step(sid))
    close(store, f, "k", writer_step_id=4, checkpoint=close_step(4))
    spec = ForkSpec("s-src", "s-fork", start_step=3, creator_token=token())
    assert store.fork_workflow(spec).kind == "created"
    r = store.read_stream("s-fork", "k", from_offset=0)
    assert r.values == [(0, j("1")), (1, j("2"))] and r.end_offset is None
    src = store.read_stream("s-src", "k", from_offset=0)
    assert [o for o, _ in src.values] == [0, 1, 2] and src.end_offset == 3


# ---------------------------------------------------------------------------------------------------------------
# Validation and limits
# ---------------------------------------------------------------------------------------------------------------


def test_invalid_arguments_rejected(store: SystemStore) -> None:
    f = pending(store, "s-bad")
    for bad in ("k\x00", "x" * 1025, "\ud800"):
        with pytest.raises(DBOSValidationError):
            put(store, f, bad, j("1"))
        with pytest.raises(DBOSValidationError):
            close(store, f, bad, checkpoint=close_step(1))
        with pytest.raises(DBOSValidationError):
            store.read_stream("s-bad", bad, from_offset=0)
    with pytest.raises(DBOSValidationError):
        store.read_stream("s-bad", "k", from_offset=-1)
    with pytest.raises(DBOSValidationError):
        store.read_stream("s-bad", "k", from_offset=0, limit=0)
    with pytest.raises(DBOSValidationError):
        store.read_stream("bad\x00", "k", from_offset=0)
    with pytest.raises(DBOSValidationError):
        put(store, f, "k", Payload("1", "s" * 65))
    assert exported_streams(store, "s-bad") == [] and store.list_steps("s-bad") == []


def test_composite_limits_accepted(store: SystemStore) -> None:
    wid = "\U0001f600" * 512  # a 2,048-byte derived workflow ID of 4-byte characters
    f = pending(store, wid)
    key = "\U0001f4a1" * 256  # 1,024 bytes
    assert put(store, f, key, j("1"), writer_step_id=1, checkpoint=write_step(1)).offset == 0
    assert close(store, f, key, writer_step_id=2, step_seq=0).offset == 1
    r = store.read_stream(wid, key, from_offset=0)
    assert r.values == [(0, j("1"))] and r.end_offset == 1 and r.writer.exists
