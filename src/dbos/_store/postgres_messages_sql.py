"""SQL text of the PostgreSQL messages and events operations (04 §2-§7; 07 §2.2 "Messages, events and streams",
§3.2, §6.3 rule 4, §6.6), built once per store for its schema.

Every op is one statement (one round trip in autocommit). Conventions shared with `postgres_sql`:
- the `_t` CTE gives one server-clock value per statement;
- the fence is `FOR KEY SHARE` on the workflow row carrying the claim token (claim_token is a key column, so every
  token change conflicts with it; see `record_step`);
- data-modifying CTEs always run to completion, so each carries its own guards; a write that must follow the
  checkpoint reads the checkpoint insert's RETURNING rows, which also orders it after that insert;
- `pg_notify` runs inside the statement, so other processes learn of the change exactly at commit.
"""

from __future__ import annotations

from psycopg import sql

from .postgres_conn import NOW_MS, channels
from .postgres_sql import STATE_COLUMNS, STEP_COLUMNS, cols, notify, render

_T = f"_t AS (SELECT {NOW_MS} AS ms)"

# The fence: the workflow row, locked while it carries the claim token.
_FENCE = (
    "f AS (SELECT workflow_id FROM {s}.workflows WHERE workflow_id = %(workflow_id)s "
    "AND claim_token = %(claim_token)s FOR KEY SHARE)"
)
# The checkpoint as this statement's snapshot sees it (a concurrent insert shows up as a refused `st`).
_PRIOR = (
    "ps AS (SELECT write_token FROM {s}.steps WHERE workflow_id = %(workflow_id)s AND step_id = %(step_id)s)"
)


def _step_insert(
    source: str, *, output: str = "%(output)s::text", serializer: str = "%(serializer)s::text"
) -> str:
    """`st`: the checkpoint, inserted from `source` (rows that pass the guards), returning every step column."""
    return (
        f"st AS (INSERT INTO {{s}}.steps ({cols(STEP_COLUMNS)}) "
        f"SELECT f.workflow_id, %(step_id)s::int, %(name)s::text, {output}, %(error)s::text, {serializer}, "
        "%(child_workflow_id)s::text, COALESCE(%(started_at)s::bigint, _t.ms), "
        f"COALESCE(%(completed_at)s::bigint, _t.ms), %(write_token)s::text FROM {source} "
        f"ON CONFLICT (workflow_id, step_id) DO NOTHING RETURNING {cols(STEP_COLUMNS)})"
    )


def _digest_sql(*parts: str) -> str:
    """`base.digest` of non-NULL text expressions: hex of the first 16 bytes of SHA-256 over the parts joined
    by a NUL byte."""
    joined = " || '\\x00'::bytea || ".join(f"convert_to({p}, 'UTF8')" for p in parts)
    return f"left(encode(sha256({joined}), 'hex'), 32)"


def send_sql(msg_notify: str, *, checkpoint: bool, forks: bool) -> str:
    """One statement. Result (one row): fence ok, the prior checkpoint's write token, checkpoint inserted,
    the first missing destination, the (destination_id, topic_digest) pairs written, the notifications.

    Destinations are locked `FOR KEY SHARE` (in ID order) so that one deleted meanwhile is reported missing
    rather than failing the foreign key; messages are inserted in list order (seq), each fork copy right after
    its original."""
    m = (
        "m AS (SELECT * FROM unnest(%(mids)s::text[], %(dests)s::text[], %(topics)s::text[], "
        "%(digests)s::text[], %(payloads)s::text[], %(serializers)s::text[]) WITH ORDINALITY "
        "AS m(message_id, destination_id, topic, topic_digest, payload, serializer, ord))"
    )
    dl = (
        "dl AS (SELECT workflow_id FROM {s}.workflows WHERE workflow_id = ANY(%(dests)s::text[]) "
        "ORDER BY workflow_id FOR KEY SHARE)"
    )
    miss = (
        "miss AS (SELECT m.destination_id FROM m WHERE NOT EXISTS "
        "(SELECT 1 FROM dl WHERE dl.workflow_id = m.destination_id) ORDER BY m.ord LIMIT 1)"
    )
    ctes = [_T, m, dl, miss]
    if checkpoint:
        ctes += [
            _FENCE,
            _PRIOR,
            _step_insert("f, _t WHERE NOT EXISTS (SELECT 1 FROM ps) AND NOT EXISTS (SELECT 1 FROM miss)"),
        ]
        go = "EXISTS (SELECT 1 FROM st)"
    else:
        go = "NOT EXISTS (SELECT 1 FROM miss)"
    rows = "SELECT m.ord, 0 AS copy, m.message_id, m.destination_id, m.topic, m.topic_digest, m.payload, m.serializer FROM m"
    if forks:
        # Every existing workflow forked from a destination, directly or transitively (one probe of the
        # `forked` index per row; UNION stops on any cycle), locked like the destinations.
        ctes += [
            "fk(src, id) AS (SELECT w.forked_from, w.workflow_id FROM {s}.workflows w "
            "WHERE w.forked_from = ANY(%(dests)s::text[]) "
            "UNION SELECT fk.src, c.workflow_id FROM fk CROSS JOIN LATERAL "
            "(SELECT w.workflow_id FROM {s}.workflows w WHERE w.forked_from = fk.id OFFSET 0) c)",
            "fl AS (SELECT w.workflow_id FROM {s}.workflows w WHERE w.workflow_id = ANY(ARRAY(SELECT id FROM fk)) "
            "ORDER BY w.workflow_id FOR KEY SHARE)",
        ]
        copy_id = _digest_sql("fk.id", "m.message_id")
        rows += (
            f" UNION ALL SELECT m.ord, 1, 'f:' || {copy_id}, fk.id, m.topic, m.topic_digest, m.payload, "
            "m.serializer FROM m JOIN fk ON fk.src = m.destination_id JOIN fl ON fl.workflow_id = fk.id"
        )
    ctes.append(
        "ins AS (INSERT INTO {s}.messages (message_id, destination_id, topic, topic_digest, payload, serializer, "
        f"created_at) SELECT r.message_id, r.destination_id, r.topic, r.topic_digest, r.payload, r.serializer, "
        f"_t.ms FROM ({rows}) r, _t WHERE {go} ORDER BY r.ord, r.copy, r.destination_id "
        "ON CONFLICT (message_id) DO NOTHING RETURNING destination_id, topic_digest)"
    )
    ctes.append("n AS (SELECT DISTINCT destination_id, topic_digest FROM ins)")
    n_expr = msg_notify.replace("KEY_D", "n.destination_id").replace("KEY_T", "n.topic_digest")
    if checkpoint:
        head = (
            "EXISTS (SELECT 1 FROM f), (SELECT write_token FROM ps), EXISTS (SELECT 1 FROM st), "
            "(SELECT destination_id FROM miss)"
        )
    else:
        head = "true, NULL::text, false, (SELECT destination_id FROM miss)"
    return (
        f"WITH RECURSIVE {', '.join(ctes)} "
        f"SELECT {head}, (SELECT array_agg(ARRAY[n.destination_id, n.topic_digest]) FROM n), "
        f"(SELECT string_agg({n_expr}, '') FROM n)"
    )


def consume_sql() -> str:
    """One statement. Result: fence ok, a message was available, then the step columns of the new checkpoint
    (src 0) or of the prior one (src 1), or NULLs. The message is marked consumed only once the checkpoint
    carrying it is in (the update reads `st`)."""
    return (
        f"WITH {_T}, {_FENCE}, "
        f"ps AS (SELECT {cols(STEP_COLUMNS)} FROM {{s}}.steps WHERE workflow_id = %(workflow_id)s "
        "AND step_id = %(step_id)s), "
        "m AS (SELECT message_id, payload, serializer FROM {s}.messages WHERE destination_id = %(workflow_id)s "
        "AND topic_digest = %(topic_digest)s AND NOT consumed AND EXISTS (SELECT 1 FROM f) "
        "AND NOT EXISTS (SELECT 1 FROM ps) ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED), "
        f"{_step_insert('f, m, _t', output='m.payload', serializer='m.serializer')}, "
        "u AS (UPDATE {s}.messages x SET consumed = true, consumed_at = _t.ms FROM m, _t "
        "WHERE x.message_id = m.message_id AND EXISTS (SELECT 1 FROM st) RETURNING 1) "
        "SELECT EXISTS (SELECT 1 FROM f), EXISTS (SELECT 1 FROM m), x.* FROM (SELECT 1) AS one LEFT JOIN "
        f"(SELECT 0 AS src, {cols(STEP_COLUMNS)} FROM st UNION ALL SELECT 1, {cols(STEP_COLUMNS)} FROM ps) x "
        "ON true"
    )


def step_row_sql() -> str:
    return f"SELECT {cols(STEP_COLUMNS)} FROM {{s}}.steps WHERE workflow_id = %(workflow_id)s AND step_id = %(step_id)s"


def set_event_sql(evt_notify: str, *, checkpoint: bool) -> str:
    """One statement. Result: fence ok, the prior checkpoint's write token, checkpoint inserted, the
    notification (sent only when the event was written)."""
    ctes = [_T, _FENCE]
    if checkpoint:
        ctes += [_PRIOR, _step_insert("f, _t WHERE NOT EXISTS (SELECT 1 FROM ps)")]
        go = "go AS (SELECT f.workflow_id FROM f WHERE EXISTS (SELECT 1 FROM st))"
    else:
        go = "go AS (SELECT workflow_id FROM f)"
    ctes += [
        go,
        "e AS (INSERT INTO {s}.events (workflow_id, key, key_digest, value, serializer, updated_at) "
        "SELECT go.workflow_id, %(key)s::text, %(key_digest)s::text, %(value)s::text, %(value_serializer)s::text, "
        "_t.ms FROM go, _t ON CONFLICT (workflow_id, key_digest) DO UPDATE SET key = EXCLUDED.key, "
        "value = EXCLUDED.value, serializer = EXCLUDED.serializer, updated_at = EXCLUDED.updated_at "
        "RETURNING workflow_id, key_digest)",
        "h AS (INSERT INTO {s}.event_history (workflow_id, step_id, key, key_digest, value, serializer, created_at) "
        "SELECT go.workflow_id, %(history_step_id)s::int, %(key)s::text, %(key_digest)s::text, %(value)s::text, "
        "%(value_serializer)s::text, _t.ms FROM go, _t ON CONFLICT (workflow_id, step_id, key_digest) "
        "DO UPDATE SET key = EXCLUDED.key, value = EXCLUDED.value, serializer = EXCLUDED.serializer, "
        "created_at = EXCLUDED.created_at)",
    ]
    head = (
        "EXISTS (SELECT 1 FROM f), (SELECT write_token FROM ps), EXISTS (SELECT 1 FROM st)"
        if checkpoint
        else "EXISTS (SELECT 1 FROM f), NULL::text, false"
    )
    n_expr = evt_notify.replace("KEY_W", "e.workflow_id").replace("KEY_K", "e.key_digest")
    return f"WITH {', '.join(ctes)} SELECT {head}, (SELECT {n_expr} FROM e)"


def get_event_sql() -> str:
    """The writer's state and the event, from one snapshot (one statement)."""
    return (
        f"SELECT {cols(STATE_COLUMNS, 'w')}, e.value, e.serializer, e.workflow_id IS NOT NULL "
        "FROM (SELECT 1) AS one "
        "LEFT JOIN {s}.workflows w ON w.workflow_id = %(workflow_id)s "
        "LEFT JOIN {s}.events e ON e.workflow_id = %(workflow_id)s AND e.key_digest = %(key_digest)s"
    )


def get_all_events_sql() -> str:
    return "SELECT key, value, serializer FROM {s}.events WHERE workflow_id = %(workflow_id)s ORDER BY key"


class MessageStatements:
    def __init__(self, schema: str) -> None:
        ident = sql.Identifier(schema)
        ch = channels(schema)
        msg_notify = notify(ch["msg"], "msg", "KEY_D", "KEY_T")
        evt_notify = notify(ch["evt"], "evt", "KEY_W", "KEY_K")

        def r(text: str) -> str:
            return render(text, ident)

        self.send = {
            (c, f): r(send_sql(msg_notify, checkpoint=c, forks=f))
            for c in (False, True)
            for f in (False, True)
        }
        self.consume = r(consume_sql())
        self.step_row = r(step_row_sql())
        self.set_event = {c: r(set_event_sql(evt_notify, checkpoint=c)) for c in (False, True)}
        self.get_event = r(get_event_sql())
        self.get_all_events = r(get_all_events_sql())
