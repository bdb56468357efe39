"""Conformance of the message and event methods of the `SystemStore` (04 §2-§7; 07 §2.2-§2.3).

Runs on both backends: `send_messages` (outside and checkpointed, keyed idempotency, missing destinations, fencing,
`send_to_forks`), topics, `consume_message` (order, replay, fencing, racing consumers), `set_event` / `get_event` /
`get_all_events` (latest wins, history entries, writer state, checkpoints), change notifications and validation.
Stored rows are observed through the protocol only: `consume_message` on the destination's fence and
`export_workflows` (which exports messages with their consumed flag, events and event_history).
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from store_kit import Recorder, fence_of, new_wf, pending, token

from dbos._store.base import (
    Change,
    ClaimRequest,
    ConsumeResult,
    EventRead,
    Fence,
    ForkSpec,
    NewMessage,
    NewStep,
    Outcome,
    Payload,
    SendResult,
    SystemStore,
    Write,
    digest,
    message_id_for_key,
    topic_digest,
)
from dbos.error import DBOSValidationError


def step(step_id: int, *, write_token: str | None = None, output: str | None = "1", **kw: Any) -> NewStep:
    return NewStep(
        step_id=step_id,
        name=kw.pop("name", f"step{step_id}"),
        output=None if output is None else Payload(output, "json"),
        error=kw.pop("error", None),
        write_token=write_token or token(),
        **kw,
    )


def recv_step(step_id: int, write_token: str | None = None) -> NewStep:
    return NewStep(step_id, "DBOS.recv", None, None, write_token or token())


def send_step(step_id: int, write_token: str | None = None) -> NewStep:
    return NewStep(step_id, "DBOS.send", None, None, write_token or token())


def event_step(step_id: int, write_token: str | None = None) -> NewStep:
    return NewStep(step_id, "DBOS.setEvent", None, None, write_token or token())


def msg(
    dest: str,
    text: str,
    topic: str | None = None,
    *,
    message_id: str | None = None,
    serializer: str = "json",
) -> NewMessage:
    return NewMessage(message_id or f"u:{uuid.uuid4().hex}", dest, topic, Payload(text, serializer))


def send(store: SystemStore, *msgs: NewMessage, send_to_forks: bool = False) -> SendResult:
    return store.send_messages(list(msgs), send_to_forks=send_to_forks, checkpoint=None)


def consume(store: SystemStore, fence: Fence, step_id: int, topic: str | None = None) -> ConsumeResult:
    return store.consume_message(fence, recv_step(step_id), topic)


def drain(store: SystemStore, fence: Fence, topic: str | None = None, *, first_step: int = 1000) -> list[str]:
    """Consume every message of (fence.workflow_id, topic); their payload texts in consume order."""
    out: list[str] = []
    sid = first_step
    while True:
        r = consume(store, fence, sid, topic)
        assert r.write is Write.APPLIED
        if r.step is None:
            return out
        assert r.step.output is not None
        out.append(r.step.output.text)
        sid += 1


def exported(store: SystemStore, workflow_id: str) -> dict[str, Any]:
    bundle = store.export_workflows([workflow_id], include_children=False)
    assert len(bundle) == 1
    return bundle[0]


def messages_of(store: SystemStore, workflow_id: str) -> list[dict[str, Any]]:
    """The exported message rows of a workflow (in seq order), with their consumed flag."""
    return list(exported(store, workflow_id)["messages"])


def payloads_of(store: SystemStore, workflow_id: str) -> list[str]:
    return [m["payload"] for m in messages_of(store, workflow_id)]


# ---------------------------------------------------------------------------------------------------------------
# Helpers of base.py
# ---------------------------------------------------------------------------------------------------------------


def test_topic_digest_and_message_id_helpers() -> None:
    assert topic_digest(None) == "-"
    assert topic_digest("") == digest("") != topic_digest(None)
    assert topic_digest("x") == digest("x") and len(topic_digest("x")) == 32
    assert message_id_for_key("d", "k") == "k:" + digest("d", "k")
    assert message_id_for_key("d", "k") != message_id_for_key("e", "k")


# ---------------------------------------------------------------------------------------------------------------
# send_messages outside a workflow (checkpoint None)
# ---------------------------------------------------------------------------------------------------------------


def test_send_outside_inserts_and_orders(store: SystemStore) -> None:
    dest = pending(store, "dest")
    result = send(store, msg("dest", '"only"'))
    assert result == SendResult(missing=None, write=Write.APPLIED)
    assert send(store, *[msg("dest", f'"m{i}"', "t") for i in range(10)]).write is Write.APPLIED
    for i in range(10, 15):  # one call after another: call order
        send(store, msg("dest", f'"m{i}"', "t"))
    assert drain(store, dest, "t") == [f'"m{i}"' for i in range(15)]
    assert drain(store, dest, None, first_step=2000) == ['"only"']


def test_send_stores_message_columns(store: SystemStore) -> None:
    pending(store, "cols")
    mid = message_id_for_key("cols", "key-1")
    send(store, msg("cols", "raw-bytes", "t", message_id=mid, serializer="pickle"), msg("cols", '"d"'))
    rows = messages_of(store, "cols")
    assert [(m["message_id"], m["topic"], m["topic_digest"]) for m in rows[:1]] == [
        (mid, "t", topic_digest("t"))
    ]
    assert (rows[0]["payload"], rows[0]["serializer"], rows[0]["consumed"]) == ("raw-bytes", "pickle", False)
    assert rows[0]["consumed_at"] is None and isinstance(rows[0]["created_at"], int)
    assert (rows[1]["topic"], rows[1]["topic_digest"]) == (None, "-")
    assert rows[1]["message_id"].startswith("u:")


def test_send_repeated_message_id_is_noop(store: SystemStore) -> None:
    dest = pending(store, "idem")
    mid = message_id_for_key("idem", "K")
    assert send(store, msg("idem", '"first"', "t", message_id=mid)).write is Write.APPLIED
    # Same key again, even with a different payload or topic: a silent no-op.
    assert send(store, msg("idem", '"second"', "t", message_id=mid)) == SendResult(None, Write.APPLIED)
    assert send(store, msg("idem", '"third"', "other", message_id=mid)).missing is None
    assert send(store, msg("idem", '"fourth"', None, message_id=mid)).missing is None
    assert payloads_of(store, "idem") == ['"first"']
    assert drain(store, dest, "other") == [] and drain(store, dest, None, first_step=2000) == []
    assert drain(store, dest, "t", first_step=3000) == ['"first"']
    # Still a no-op after the message has been consumed.
    send(store, msg("idem", '"fifth"', "t", message_id=mid))
    assert drain(store, dest, "t", first_step=4000) == []
    # The same key to another destination is a distinct message.
    other = pending(store, "idem-2")
    send(store, msg("idem-2", '"x"', "t", message_id=message_id_for_key("idem-2", "K")))
    assert drain(store, other, "t") == ['"x"']


def test_send_repeated_message_id_within_one_call(store: SystemStore) -> None:
    dest = pending(store, "dup-in-call")
    mid = message_id_for_key("dup-in-call", "K")
    result = send(store, msg("dup-in-call", '"a"', message_id=mid), msg("dup-in-call", '"b"', message_id=mid))
    assert result.missing is None
    assert drain(store, dest) == ['"a"']


def test_send_missing_destination_writes_nothing(store: SystemStore) -> None:
    a = pending(store, "ma")
    b = pending(store, "mb")
    rec = Recorder()
    store.changes.subscribe(rec)
    result = send(store, msg("ma", '"1"'), msg("ghost-1", '"2"'), msg("mb", '"3"'), msg("ghost-2", '"4"'))
    assert result.missing == "ghost-1"
    assert drain(store, a) == [] and drain(store, b) == []
    assert messages_of(store, "ma") == [] and messages_of(store, "mb") == []
    assert [c for c in rec.seen() if c.kind == "msg"] == []
    # A message to any existing status is stored (the status does not matter).
    done = new_wf("done")
    store.insert_workflow(done)
    store.record_outcome(fence_of(done), Outcome("SUCCESS", Payload("1", "json")))
    store.insert_workflow(new_wf("queued", status="ENQUEUED", queue_name="q"))
    assert send(store, msg("done", '"late"'), msg("queued", '"early"')).missing is None
    assert payloads_of(store, "done") == ['"late"'] and payloads_of(store, "queued") == ['"early"']


def test_send_empty_list(store: SystemStore) -> None:
    assert send(store) == SendResult(None, Write.APPLIED)


# ---------------------------------------------------------------------------------------------------------------
# send_messages with a checkpoint
# ---------------------------------------------------------------------------------------------------------------


def test_send_checkpoint_applied_replay_conflict(store: SystemStore) -> None:
    sender = pending(store, "sender")
    dest = pending(store, "receiver")
    cp = send_step(1, "tok-1")
    r = store.send_messages([msg("receiver", '"hi"')], send_to_forks=False, checkpoint=(sender, cp))
    assert r == SendResult(None, Write.APPLIED)
    steps = store.list_steps("sender")
    assert [(s.step_id, s.name, s.write_token) for s in steps] == [(1, "DBOS.send", "tok-1")]
    assert payloads_of(store, "receiver") == ['"hi"']
    # The same logical write again (an ambiguous retry): APPLIED, no second message.
    again = store.send_messages([msg("receiver", '"hi"')], send_to_forks=False, checkpoint=(sender, cp))
    assert again == SendResult(None, Write.APPLIED)
    assert payloads_of(store, "receiver") == ['"hi"']
    # Another writer's token for the same step: CONFLICT, nothing written.
    other = store.send_messages(
        [msg("receiver", '"other"')], send_to_forks=False, checkpoint=(sender, send_step(1, "tok-2"))
    )
    assert other.write is Write.CONFLICT
    assert payloads_of(store, "receiver") == ['"hi"']
    assert [s.write_token for s in store.list_steps("sender")] == ["tok-1"]
    assert drain(store, dest) == ['"hi"']


def test_send_checkpoint_replay_does_not_check_destination(store: SystemStore) -> None:
    sender = pending(store, "s-replay")
    pending(store, "d-replay")
    cp = send_step(1)
    assert store.send_messages(
        [msg("d-replay", '"x"')], send_to_forks=False, checkpoint=(sender, cp)
    ).write is (Write.APPLIED)
    assert store.delete_workflows(["d-replay"], delete_children=False) == ["d-replay"]
    again = store.send_messages([msg("d-replay", '"x"')], send_to_forks=False, checkpoint=(sender, cp))
    assert again.write is Write.APPLIED


def test_send_checkpoint_fenced_writes_nothing(store: SystemStore) -> None:
    pending(store, "s-fenced")
    pending(store, "d-fenced")
    rec = Recorder()
    store.changes.subscribe(rec)
    stale = Fence("s-fenced", "not-the-token")
    r = store.send_messages([msg("d-fenced", '"x"')], send_to_forks=False, checkpoint=(stale, send_step(1)))
    assert r.write is Write.FENCED
    assert store.list_steps("s-fenced") == [] and messages_of(store, "d-fenced") == []
    gone = Fence("no-such-sender", "t")
    r = store.send_messages([msg("d-fenced", '"y"')], send_to_forks=False, checkpoint=(gone, send_step(1)))
    assert r.write is Write.FENCED
    assert messages_of(store, "d-fenced") == []
    assert [c for c in rec.seen() if c.kind == "msg"] == []


def test_send_checkpoint_missing_destination_writes_no_checkpoint(store: SystemStore) -> None:
    sender = pending(store, "s-miss")
    pending(store, "d-ok")
    r = store.send_messages(
        [msg("d-ok", '"1"'), msg("d-ghost", '"2"')], send_to_forks=False, checkpoint=(sender, send_step(1))
    )
    assert r.missing == "d-ghost"
    assert store.list_steps("s-miss") == [] and messages_of(store, "d-ok") == []


def test_send_checkpoint_with_empty_list_records_step(store: SystemStore) -> None:
    sender = pending(store, "s-empty")
    r = store.send_messages([], send_to_forks=False, checkpoint=(sender, send_step(4, "t4")))
    assert r == SendResult(None, Write.APPLIED)
    assert [(s.step_id, s.write_token) for s in store.list_steps("s-empty")] == [(4, "t4")]


# ---------------------------------------------------------------------------------------------------------------
# send_to_forks
# ---------------------------------------------------------------------------------------------------------------


def _fork(store: SystemStore, source: str, new_id: str) -> None:
    assert (
        store.fork_workflow(ForkSpec(source, new_id, start_step=1, creator_token=token())).kind == "created"
    )


def test_send_to_forks(store: SystemStore) -> None:
    pending(store, "orig")
    _fork(store, "orig", "fork-1")
    _fork(store, "fork-1", "fork-2")
    pending(store, "bystander")
    mid = message_id_for_key("orig", "K")
    assert send(store, msg("orig", '"all"', "t", message_id=mid), send_to_forks=True).missing is None
    assert payloads_of(store, "orig") == ['"all"']
    assert payloads_of(store, "fork-1") == ['"all"'] and payloads_of(store, "fork-2") == ['"all"']
    assert payloads_of(store, "bystander") == []
    copies = {wid: messages_of(store, wid)[0] for wid in ("orig", "fork-1", "fork-2")}
    assert copies["orig"]["message_id"] == mid
    for wid in ("fork-1", "fork-2"):
        assert copies[wid]["message_id"] == "f:" + digest(wid, mid)
        assert (copies[wid]["topic"], copies[wid]["topic_digest"]) == ("t", topic_digest("t"))
    # The copies obey idempotency too.
    send(store, msg("orig", '"again"', "t", message_id=mid), send_to_forks=True)
    assert [len(messages_of(store, w)) for w in ("orig", "fork-1", "fork-2")] == [1, 1, 1]
    # Without send_to_forks only the destination receives.
    send(store, msg("orig", '"only-orig"', "t"), send_to_forks=False)
    assert payloads_of(store, "orig") == ['"all"', '"only-orig"']
    assert payloads_of(store, "fork-1") == ['"all"'] and payloads_of(store, "fork-2") == ['"all"']
    # Forks are of the destination, never of its ancestors.
    send(store, msg("fork-1", '"mid"', "t"), send_to_forks=True)
    assert payloads_of(store, "orig") == ['"all"', '"only-orig"']
    assert payloads_of(store, "fork-1") == ['"all"', '"mid"'] and payloads_of(store, "fork-2") == [
        '"all"',
        '"mid"',
    ]


def test_send_to_forks_with_checkpoint(store: SystemStore) -> None:
    sender = pending(store, "fs-sender")
    pending(store, "fs-dest")
    _fork(store, "fs-dest", "fs-fork")
    cp = send_step(1)
    r = store.send_messages([msg("fs-dest", '"v"')], send_to_forks=True, checkpoint=(sender, cp))
    assert r == SendResult(None, Write.APPLIED)
    assert payloads_of(store, "fs-dest") == ['"v"'] and payloads_of(store, "fs-fork") == ['"v"']
    store.send_messages([msg("fs-dest", '"v"')], send_to_forks=True, checkpoint=(sender, cp))
    assert payloads_of(store, "fs-dest") == ['"v"'] and payloads_of(store, "fs-fork") == ['"v"']


# ---------------------------------------------------------------------------------------------------------------
# Topics
# ---------------------------------------------------------------------------------------------------------------


def test_topics_are_distinct(store: SystemStore) -> None:
    dest = pending(store, "topics")
    send(store, msg("topics", '"x"', "x"), msg("topics", '"empty"', ""), msg("topics", '"default"', None))
    assert drain(store, dest, "y", first_step=100) == []
    assert drain(store, dest, None, first_step=200) == ['"default"']
    assert drain(store, dest, "", first_step=300) == ['"empty"']
    assert drain(store, dest, None, first_step=400) == []
    assert drain(store, dest, "x", first_step=500) == ['"x"']
    digests = {m["topic"]: m["topic_digest"] for m in messages_of(store, "topics")}
    assert digests == {"x": digest("x"), "": digest(""), None: "-"}


# ---------------------------------------------------------------------------------------------------------------
# consume_message
# ---------------------------------------------------------------------------------------------------------------


def test_consume_oldest_first_and_step_row(store: SystemStore) -> None:
    dest = pending(store, "c1")
    send(store, msg("c1", "first", "t", serializer="pickle"))
    send(store, msg("c1", '"second"', "t"))
    r = store.consume_message(dest, recv_step(3, "rt-3"), "t")
    assert r.write is Write.APPLIED and r.step is not None
    s = r.step
    assert (s.workflow_id, s.step_id, s.name, s.write_token) == ("c1", 3, "DBOS.recv", "rt-3")
    assert s.output == Payload("first", "pickle") and s.error is None and s.child_workflow_id is None
    listed = store.list_steps("c1")
    assert [(x.step_id, x.output) for x in listed] == [(3, Payload("first", "pickle"))]
    rows = messages_of(store, "c1")
    assert [(m["payload"], m["consumed"]) for m in rows] == [("first", True), ('"second"', False)]
    assert isinstance(rows[0]["consumed_at"], int) and rows[1]["consumed_at"] is None
    # A second consume with another step id gets the next message.
    r2 = consume(store, dest, 4, "t")
    assert r2.step is not None and r2.step.output == Payload('"second"', "json")
    assert consume(store, dest, 5, "t") == ConsumeResult(Write.APPLIED, None)
    assert [x.step_id for x in store.list_steps("c1")] == [3, 4]


def test_consume_no_message_writes_nothing(store: SystemStore) -> None:
    dest = pending(store, "c-empty")
    send(store, msg("c-empty", '"other"', "other-topic"))
    r = consume(store, dest, 1, "t")
    assert r.write is Write.APPLIED and r.step is None
    assert store.list_steps("c-empty") == []
    assert [m["consumed"] for m in messages_of(store, "c-empty")] == [False]


def test_consume_recorded_step_consumes_nothing(store: SystemStore) -> None:
    dest = pending(store, "c-replay")
    send(store, msg("c-replay", '"m1"'), msg("c-replay", '"m2"'))
    first = store.consume_message(dest, recv_step(1, "tok-a"), None)
    assert first.step is not None and first.step.output == Payload('"m1"', "json")
    # Replay with my token returns the recorded step and consumes nothing.
    replay = store.consume_message(dest, recv_step(1, "tok-a"), None)
    assert replay.write is Write.APPLIED and replay.step is not None
    assert replay.step.output == Payload('"m1"', "json") and replay.step.write_token == "tok-a"
    # Another writer's token for the recorded step: CONFLICT, still nothing consumed.
    other = store.consume_message(dest, recv_step(1, "tok-b"), None)
    assert other.write is Write.CONFLICT
    assert other.step is not None and other.step.output == Payload('"m1"', "json")
    assert other.step.write_token == "tok-a"
    assert [m["consumed"] for m in messages_of(store, "c-replay")] == [True, False]
    # A recv that timed out (recorded None) replays as None and leaves the message.
    assert store.record_step(dest, NewStep(2, "DBOS.recv", None, None, "tok-c")) is Write.APPLIED
    timed_out = store.consume_message(dest, recv_step(2, "tok-c"), None)
    assert timed_out.write is Write.APPLIED and timed_out.step is not None
    assert timed_out.step.step_id == 2 and timed_out.step.output is None
    assert [m["consumed"] for m in messages_of(store, "c-replay")] == [True, False]
    assert drain(store, dest) == ['"m2"']


def test_consume_fenced_consumes_nothing(store: SystemStore) -> None:
    pending(store, "c-fenced")
    send(store, msg("c-fenced", '"m"'))
    r = store.consume_message(Fence("c-fenced", "stale"), recv_step(1), None)
    assert r.write is Write.FENCED and r.step is None
    assert store.list_steps("c-fenced") == []
    assert [m["consumed"] for m in messages_of(store, "c-fenced")] == [False]
    missing = store.consume_message(Fence("no-such-workflow", "t"), recv_step(1), None)
    assert missing.write is Write.FENCED and missing.step is None


def test_consume_after_reclaim_uses_new_fence(store: SystemStore) -> None:
    store.insert_workflow(new_wf("c-q", status="ENQUEUED", queue_name="cq"))
    send(store, msg("c-q", '"m1"'), msg("c-q", '"m2"'))

    def claim() -> Fence:
        req = ClaimRequest("cq", "exec-a", 1, None, None, frozenset({"wf"}), 1, token())
        return store.claim(req).claimed[0].fence

    f1 = claim()
    assert consume(store, f1, 1).step is not None
    assert store.release([f1], refund_attempt=False) == ["c-q"]
    f2 = claim()
    assert consume(store, f1, 2).write is Write.FENCED
    r = consume(store, f2, 2)
    assert r.write is Write.APPLIED and r.step is not None and r.step.output == Payload('"m2"', "json")


def test_racing_consumers_never_share_a_message(store: SystemStore, peer: SystemStore) -> None:
    dest = pending(store, "race")
    n = 40
    send(store, *[msg("race", f'"m{i}"', "t") for i in range(n)])
    got: dict[int, list[str]] = {0: [], 1: []}
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(i: int, s: SystemStore) -> None:
        try:
            barrier.wait()
            sid = 1 + i * 10_000
            while True:
                r = s.consume_message(dest, recv_step(sid), "t")
                assert r.write is Write.APPLIED
                if r.step is None:
                    return
                assert r.step.output is not None
                got[i].append(r.step.output.text)
                sid += 1
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i, s)) for i, s in enumerate((store, peer))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    everything = got[0] + got[1]
    assert sorted(everything) == sorted(f'"m{i}"' for i in range(n))
    assert len(set(everything)) == n
    # Each consumer got its messages in send order.
    for i in (0, 1):
        assert got[i] == sorted(got[i], key=lambda t: int(t.strip('"m')))
    assert len(store.list_steps("race")) == n
    assert all(m["consumed"] for m in messages_of(store, "race"))


# ---------------------------------------------------------------------------------------------------------------
# set_event / get_event / get_all_events
# ---------------------------------------------------------------------------------------------------------------


def test_set_event_latest_wins_and_reads(store: SystemStore) -> None:
    f = pending(store, "ev")
    assert (
        store.set_event(f, "k", Payload('"v1"', "json"), history_step_id=1, checkpoint=None) is Write.APPLIED
    )
    assert (
        store.set_event(f, "k", Payload("v2", "pickle"), history_step_id=2, checkpoint=None) is Write.APPLIED
    )
    assert store.set_event(f, "other", Payload('"o"', "json"), history_step_id=3, checkpoint=None) is (
        Write.APPLIED
    )
    read = store.get_event("ev", "k")
    assert isinstance(read, EventRead)
    assert read.is_set and read.value == Payload("v2", "pickle")
    assert read.writer.exists and read.writer.status == "PENDING"
    assert store.get_all_events("ev") == {"k": Payload("v2", "pickle"), "other": Payload('"o"', "json")}


def test_get_event_unset_and_writer_state(store: SystemStore) -> None:
    f = pending(store, "ev-unset")
    unset = store.get_event("ev-unset", "nope")
    assert not unset.is_set and unset.value is None
    assert unset.writer.exists and unset.writer.status == "PENDING"
    ghost = store.get_event("no-such-workflow", "k")
    assert not ghost.is_set and ghost.value is None and not ghost.writer.exists
    assert ghost.writer.status is None
    assert store.get_all_events("no-such-workflow") == {}
    assert store.get_all_events("ev-unset") == {}
    store.set_event(f, "k", Payload('"v"', "json"), history_step_id=1, checkpoint=None)
    assert store.record_outcome(f, Outcome("SUCCESS", Payload("1", "json"))).applied
    done = store.get_event("ev-unset", "k")
    assert done.is_set and done.value == Payload('"v"', "json")
    assert done.writer.exists and done.writer.status == "SUCCESS" and done.writer.completed_at is not None
    still_unset = store.get_event("ev-unset", "nope")
    assert not still_unset.is_set and still_unset.writer.status == "SUCCESS"


def test_set_event_empty_key(store: SystemStore) -> None:
    f = pending(store, "ev-empty")
    store.set_event(f, "", Payload('"e"', "json"), history_step_id=1, checkpoint=None)
    assert store.get_event("ev-empty", "").value == Payload('"e"', "json")
    assert store.get_all_events("ev-empty") == {"": Payload('"e"', "json")}
    events = exported(store, "ev-empty")["events"]
    assert [(e["key"], e["key_digest"]) for e in events] == [("", digest(""))]


def test_set_event_checkpoint_applied_conflict(store: SystemStore) -> None:
    f = pending(store, "ev-cp")
    cp = event_step(2, "tok-1")
    assert store.set_event(f, "k", Payload('"v1"', "json"), history_step_id=2, checkpoint=cp) is Write.APPLIED
    assert [(s.step_id, s.name, s.write_token) for s in store.list_steps("ev-cp")] == [
        (2, "DBOS.setEvent", "tok-1")
    ]
    # Replay with my token: APPLIED, nothing written (the value stays).
    assert store.set_event(f, "k", Payload('"v2"', "json"), history_step_id=2, checkpoint=cp) is Write.APPLIED
    assert store.get_event("ev-cp", "k").value == Payload('"v1"', "json")
    # Another token: CONFLICT, nothing written.
    assert (
        store.set_event(f, "k", Payload('"v3"', "json"), history_step_id=2, checkpoint=event_step(2, "tok-2"))
        is Write.CONFLICT
    )
    assert store.get_event("ev-cp", "k").value == Payload('"v1"', "json")
    e = exported(store, "ev-cp")
    assert [(h["step_id"], h["key"], h["value"]) for h in e["event_history"]] == [(2, "k", '"v1"')]
    assert [s.write_token for s in store.list_steps("ev-cp")] == ["tok-1"]


def test_set_event_fenced_writes_nothing(store: SystemStore) -> None:
    pending(store, "ev-fenced")
    rec = Recorder()
    store.changes.subscribe(rec)
    stale = Fence("ev-fenced", "stale")
    assert (
        store.set_event(stale, "k", Payload('"v"', "json"), history_step_id=1, checkpoint=None)
        is Write.FENCED
    )
    assert (
        store.set_event(stale, "k", Payload('"v"', "json"), history_step_id=2, checkpoint=event_step(2))
        is Write.FENCED
    )
    gone = Fence("no-such-workflow", "t")
    assert (
        store.set_event(gone, "k", Payload('"v"', "json"), history_step_id=1, checkpoint=None) is Write.FENCED
    )
    assert not store.get_event("ev-fenced", "k").is_set
    e = exported(store, "ev-fenced")
    assert e["events"] == [] and e["event_history"] == [] and e["steps"] == []
    assert [c for c in rec.seen() if c.kind == "evt"] == []


def test_event_history_entries(store: SystemStore) -> None:
    f = pending(store, "ev-hist")
    store.set_event(f, "a", Payload("1", "json"), history_step_id=1, checkpoint=None)
    store.set_event(f, "b", Payload("2", "json"), history_step_id=2, checkpoint=event_step(2))
    store.set_event(f, "a", Payload("3", "json"), history_step_id=3, checkpoint=None)
    # A re-executed step (same history_step_id) overwrites its entry.
    store.set_event(f, "a", Payload("4", "pickle"), history_step_id=3, checkpoint=None)
    # One step may set several keys: one entry per (step, key).
    store.set_event(f, "b", Payload("5", "json"), history_step_id=3, checkpoint=None)
    assert store.get_all_events("ev-hist") == {"a": Payload("4", "pickle"), "b": Payload("5", "json")}
    e = exported(store, "ev-hist")
    history = sorted((h["step_id"], h["key"], h["value"], h["serializer"]) for h in e["event_history"])
    assert history == [
        (1, "a", "1", "json"),
        (2, "b", "2", "json"),
        (3, "a", "4", "pickle"),
        (3, "b", "5", "json"),
    ]
    assert all(h["key_digest"] == digest(h["key"]) for h in e["event_history"])
    events = {ev["key"]: (ev["key_digest"], ev["value"], ev["serializer"]) for ev in e["events"]}
    assert events == {"a": (digest("a"), "4", "pickle"), "b": (digest("b"), "5", "json")}
    assert all(isinstance(ev["updated_at"], int) for ev in e["events"])


def test_fork_rebuilds_events_from_history(store: SystemStore) -> None:
    f = pending(store, "ev-src")
    store.set_event(f, "a", Payload("1", "json"), history_step_id=1, checkpoint=event_step(1))
    store.set_event(f, "a", Payload("2", "json"), history_step_id=2, checkpoint=event_step(2))
    store.set_event(f, "b", Payload("3", "json"), history_step_id=3, checkpoint=event_step(3))
    assert store.fork_workflow(ForkSpec("ev-src", "ev-fork", start_step=3, creator_token=token())).kind == (
        "created"
    )
    assert store.get_all_events("ev-fork") == {"a": Payload("2", "json")}
    assert store.get_all_events("ev-src") == {"a": Payload("2", "json"), "b": Payload("3", "json")}


# ---------------------------------------------------------------------------------------------------------------
# Change notifications
# ---------------------------------------------------------------------------------------------------------------


def test_send_emits_msg_in_process_and_to_peer(store: SystemStore, peer: SystemStore) -> None:
    pending(store, "n-a")
    pending(store, "n-b")
    local, remote = Recorder(), Recorder()
    store.changes.subscribe(local)
    peer.changes.subscribe(remote)
    send(store, msg("n-a", '"1"', "t"), msg("n-a", '"2"', None), msg("n-b", '"3"', ""))
    expected = {
        Change("msg", ("n-a", topic_digest("t"))),
        Change("msg", ("n-a", "-")),
        Change("msg", ("n-b", topic_digest(""))),
    }
    assert expected <= set(local.seen())  # delivered before the call returned
    for change in expected:
        assert remote.wait_for(lambda c, ch=change: c == ch), change


def test_send_to_forks_emits_per_fork(store: SystemStore) -> None:
    pending(store, "nf")
    _fork(store, "nf", "nf-fork")
    rec = Recorder()
    store.changes.subscribe(rec)
    send(store, msg("nf", '"1"', "t"), send_to_forks=True)
    assert {Change("msg", ("nf", topic_digest("t"))), Change("msg", ("nf-fork", topic_digest("t")))} <= set(
        rec.seen()
    )


def test_set_event_emits_evt_in_process_and_to_peer(store: SystemStore, peer: SystemStore) -> None:
    f = pending(store, "n-ev")
    local, remote = Recorder(), Recorder()
    store.changes.subscribe(local)
    peer.changes.subscribe(remote)
    store.set_event(f, "key", Payload("1", "json"), history_step_id=1, checkpoint=None)
    store.set_event(f, "", Payload("2", "json"), history_step_id=2, checkpoint=event_step(2))
    for key in ("key", ""):
        change = Change("evt", ("n-ev", digest(key)))
        assert change in local.seen()
        assert remote.wait_for(lambda c, ch=change: c == ch), change


# ---------------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------------


def test_nul_in_topic_or_key_rejected(store: SystemStore) -> None:
    f = pending(store, "bad")
    with pytest.raises(DBOSValidationError):
        send(store, msg("bad", '"ok"', "fine"), msg("bad", '"x"', "a\x00b"))
    with pytest.raises(DBOSValidationError):
        store.send_messages([msg("bad", '"x"', "a\x00b")], send_to_forks=False, checkpoint=(f, send_step(1)))
    with pytest.raises(DBOSValidationError):
        send(store, msg("bad\x00", '"x"'))
    with pytest.raises(DBOSValidationError):
        store.consume_message(f, recv_step(2), "a\x00b")
    with pytest.raises(DBOSValidationError):
        store.set_event(f, "k\x00", Payload("1", "json"), history_step_id=3, checkpoint=None)
    with pytest.raises(DBOSValidationError):
        store.set_event(f, "k\x00", Payload("1", "json"), history_step_id=4, checkpoint=event_step(4))
    with pytest.raises(DBOSValidationError):
        store.get_event("bad", "k\x00")
    e = exported(store, "bad")
    assert e["messages"] == [] and e["events"] == [] and e["event_history"] == [] and e["steps"] == []


# ---------------------------------------------------------------------------------------------------------------
# More send / consume properties
# ---------------------------------------------------------------------------------------------------------------


def test_send_many_destinations_in_list_order(store: SystemStore) -> None:
    fences = {f"md-{d}": pending(store, f"md-{d}") for d in range(5)}
    batch = [msg(f"md-{i % 5}", f'"{i}"', "t" if i % 2 else None) for i in range(100)]
    assert send(store, *batch) == SendResult(None, Write.APPLIED)
    for wid, f in fences.items():
        for topic in ("t", None):
            want = [m.payload.text for m in batch if m.destination_id == wid and m.topic == topic]
            assert drain(store, f, topic, first_step=1 if topic else 500) == want


def test_concurrent_keyed_sends_yield_one_message(store: SystemStore, peer: SystemStore) -> None:
    dest = pending(store, "kc")
    mid = message_id_for_key("kc", "same-key")
    barrier = threading.Barrier(8)
    results: list[SendResult] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        try:
            s = store if i % 2 else peer
            barrier.wait()
            r = send(s, msg("kc", f'"{i}"', "t", message_id=mid))
            with lock:
                results.append(r)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert results == [SendResult(None, Write.APPLIED)] * 8
    assert len(messages_of(store, "kc")) == 1
    assert len(drain(store, dest, "t")) == 1


def test_consumed_at_uses_database_clock(store: SystemStore) -> None:
    dest = pending(store, "clock")
    before = store.now_ms()
    send(store, msg("clock", '"m"'))
    consume(store, dest, 1)
    after = store.now_ms()
    row = messages_of(store, "clock")[0]
    assert before <= row["created_at"] <= row["consumed_at"] <= after


def test_checkpointed_send_emits_msg(store: SystemStore) -> None:
    sender = pending(store, "ce-sender")
    pending(store, "ce-dest")
    rec = Recorder()
    store.changes.subscribe(rec)
    store.send_messages([msg("ce-dest", '"x"', "t")], send_to_forks=False, checkpoint=(sender, send_step(1)))
    assert Change("msg", ("ce-dest", topic_digest("t"))) in rec.seen()


def test_fork_does_not_copy_messages(store: SystemStore) -> None:
    pending(store, "fm-src")
    send(store, msg("fm-src", '"before"'))
    _fork(store, "fm-src", "fm-fork")
    assert payloads_of(store, "fm-fork") == []
    send(store, msg("fm-src", '"after"'), send_to_forks=True)
    assert payloads_of(store, "fm-fork") == ['"after"']
    assert payloads_of(store, "fm-src") == ['"before"', '"after"']


def test_deleted_workflow_loses_messages_and_events(store: SystemStore) -> None:
    f = pending(store, "del")
    send(store, msg("del", '"m"'))
    store.set_event(f, "k", Payload("1", "json"), history_step_id=1, checkpoint=None)
    assert store.delete_workflows(["del"], delete_children=False) == ["del"]
    gone = store.get_event("del", "k")
    assert not gone.is_set and gone.value is None and not gone.writer.exists
    assert store.get_all_events("del") == {}
    assert send(store, msg("del", '"late"')).missing == "del"
    # Re-creating the ID starts with an empty inbox and no events.
    again = pending(store, "del")
    assert drain(store, again) == [] and store.get_all_events("del") == {}


def test_send_fence_checked_before_destinations(store: SystemStore) -> None:
    pending(store, "fc-sender")
    r = store.send_messages(
        [msg("fc-ghost", '"x"')], send_to_forks=False, checkpoint=(Fence("fc-sender", "stale"), send_step(1))
    )
    assert r.write is Write.FENCED
    assert store.list_steps("fc-sender") == []


def test_send_to_self_with_checkpoint(store: SystemStore) -> None:
    me = pending(store, "self")
    r = store.send_messages([msg("self", '"note"')], send_to_forks=False, checkpoint=(me, send_step(1)))
    assert r == SendResult(None, Write.APPLIED)
    got = consume(store, me, 2)
    assert got.step is not None and got.step.output == Payload('"note"', "json")
    assert [s.step_id for s in store.list_steps("self")] == [1, 2]


# ---------------------------------------------------------------------------------------------------------------
# Text limits (07 §3.4)
# ---------------------------------------------------------------------------------------------------------------


def test_composite_limits_accepted(store: SystemStore) -> None:
    wid = "\U0001f600" * 512  # a 2,048-byte derived workflow ID of 4-byte characters
    f = pending(store, wid)
    topic = "\U0001f680" * 256  # 1,024 bytes
    key = "\U0001f4a1" * 256
    assert send(store, msg(wid, '"m"', topic)).missing is None
    got = consume(store, f, 1, topic)
    assert got.step is not None and got.step.output == Payload('"m"', "json")
    assert store.set_event(f, key, Payload("1", "json"), history_step_id=2, checkpoint=None) is Write.APPLIED
    assert store.get_event(wid, key).value == Payload("1", "json")
    assert store.get_all_events(wid) == {key: Payload("1", "json")}


def test_unstorable_topics_keys_and_serializers_rejected(store: SystemStore) -> None:
    f = pending(store, "limits")
    for bad in ("x" * 1025, "\ud800", "a\x00"):
        with pytest.raises(DBOSValidationError):
            send(store, msg("limits", '"x"', bad))
        with pytest.raises(DBOSValidationError):
            store.consume_message(f, recv_step(1), bad)
        with pytest.raises(DBOSValidationError):
            store.set_event(f, bad, Payload("1", "json"), history_step_id=2, checkpoint=None)
    with pytest.raises(DBOSValidationError):
        send(store, msg("limits", '"x"', serializer="s" * 65))
    with pytest.raises(DBOSValidationError):
        store.set_event(f, "k", Payload("1", "s" * 65), history_step_id=3, checkpoint=None)
    e = exported(store, "limits")
    assert e["messages"] == [] and e["events"] == [] and e["event_history"] == [] and e["steps"] == []
