"""SQL text of the PostgreSQL stream operations (04 §8-§11; 07 §2.2 "Messages, events and streams" note 3-4,
§3.2 rule 6, §6.6), built once per store for its schema.

Conventions are those of `postgres_messages_sql`: one statement per attempt (one round trip in autocommit), `_t`
for one server-clock value, the fence as `FOR KEY SHARE` on the workflow row carrying the claim token, and
`pg_notify` inside the statement.

`write_stream` computes the next offset from its snapshot and inserts with `ON CONFLICT DO NOTHING` (any unique
index: the offset, the end marker, the step sequence). A concurrent writer that took the same offset makes the
insert wait for it and then do nothing; the caller retries with a new snapshot, which sees that writer's row.
So an offset is only ever taken once every lower one has committed: offsets are gapless and become visible in
commit order (04 §8 rule 2). The checkpoint (a body write) is inserted from the stream insert's RETURNING rows
without `ON CONFLICT`: a checkpoint committed after our snapshot aborts the whole statement with a unique
violation (nothing is written), and the retry sees it as the prior checkpoint.
"""

from __future__ import annotations

from psycopg import sql

from .postgres_conn import NOW_MS, channels
from .postgres_sql import STATE_COLUMNS, STEP_COLUMNS, cols, notify, render

_T = f"_t AS (SELECT {NOW_MS} AS ms)"
_FENCE = (
    "f AS (SELECT workflow_id FROM {s}.workflows WHERE workflow_id = %(workflow_id)s "
    "AND claim_token = %(claim_token)s FOR KEY SHARE)"
)
_PRIOR = (
    "ps AS (SELECT write_token FROM {s}.steps WHERE workflow_id = %(workflow_id)s AND step_id = %(step_id)s)"
)
_THIS = "workflow_id = %(workflow_id)s AND key_digest = %(key_digest)s"


def write_stream_sql(stream_notify: str, *, checkpoint: bool, step_seq: bool) -> str:
    """One statement. Result (one row): fence ok, the prior checkpoint's write token, the offset of the row
    already written for (writer_step_id, key, step_seq), the end marker's offset, whether the insert was tried,
    the offset inserted, the notification (sent only when a row was inserted)."""
    ctes = [_T, _FENCE]
    guards = []
    if checkpoint:
        ctes.append(_PRIOR)
        guards.append("NOT EXISTS (SELECT 1 FROM ps)")
    if step_seq:
        ctes.append(
            "sq AS (SELECT stream_offset FROM {s}.streams WHERE workflow_id = %(workflow_id)s "
            "AND writer_step_id = %(writer_step_id)s AND key_digest = %(key_digest)s "
            "AND step_seq = %(step_seq)s)"
        )
        guards.append("NOT EXISTS (SELECT 1 FROM sq)")
    guards.append("NOT EXISTS (SELECT 1 FROM ce)")
    ctes += [
        f"ce AS (SELECT stream_offset FROM {{s}}.streams WHERE {_THIS} AND is_end)",
        f"nx AS (SELECT COALESCE(max(stream_offset) + 1, 0) AS o FROM {{s}}.streams WHERE {_THIS})",
        f"go AS (SELECT f.workflow_id FROM f WHERE {' AND '.join(guards)})",
        "ins AS (INSERT INTO {s}.streams (workflow_id, key, key_digest, stream_offset, value, serializer, is_end, "
        "writer_step_id, step_seq, created_at) SELECT go.workflow_id, %(key)s::text, %(key_digest)s::text, nx.o, "
        "%(value)s::text, %(value_serializer)s::text, %(is_end)s::boolean, %(writer_step_id)s::int, "
        "%(step_seq)s::int, _t.ms FROM go, nx, _t ON CONFLICT DO NOTHING RETURNING workflow_id, key_digest, "
        "stream_offset)",
    ]
    if checkpoint:
        ctes.append(
            f"st AS (INSERT INTO {{s}}.steps ({cols(STEP_COLUMNS)}) "
            "SELECT ins.workflow_id, %(step_id)s::int, %(name)s::text, %(output)s::text, %(error)s::text, "
            "%(serializer)s::text, %(child_workflow_id)s::text, COALESCE(%(started_at)s::bigint, _t.ms), "
            "COALESCE(%(completed_at)s::bigint, _t.ms), %(write_token)s::text FROM ins, _t RETURNING 1)"
        )
        prior = "(SELECT write_token FROM ps)"
    else:
        prior = "NULL::text"
    found = "(SELECT stream_offset FROM sq)" if step_seq else "NULL::bigint"
    n_expr = stream_notify.replace("KEY_W", "ins.workflow_id").replace("KEY_K", "ins.key_digest")
    return (
        f"WITH {', '.join(ctes)} "
        f"SELECT EXISTS (SELECT 1 FROM f), {prior}, {found}, (SELECT stream_offset FROM ce), "
        "EXISTS (SELECT 1 FROM go), (SELECT stream_offset FROM ins), "
        f"(SELECT {n_expr} FROM ins)"
    )


def read_stream_sql() -> str:
    """One statement, so one snapshot: the writer's state, the end marker's offset, then one row per value
    (offset, value, serializer; NULLs when there is none), in offset order."""
    return (
        f"SELECT {cols(STATE_COLUMNS, 'w')}, "
        f"(SELECT stream_offset FROM {{s}}.streams WHERE {_THIS} AND is_end), "
        "v.stream_offset, v.value, v.serializer "
        "FROM (SELECT 1) AS one "
        "LEFT JOIN {s}.workflows w ON w.workflow_id = %(workflow_id)s "
        f"LEFT JOIN LATERAL (SELECT stream_offset, value, serializer FROM {{s}}.streams WHERE {_THIS} "
        "AND stream_offset >= %(from_offset)s AND NOT is_end ORDER BY stream_offset LIMIT %(limit)s) v ON true "
        "ORDER BY v.stream_offset"
    )


class StreamStatements:
    def __init__(self, schema: str) -> None:
        ident = sql.Identifier(schema)
        stream_notify = notify(channels(schema)["stream"], "stream", "KEY_W", "KEY_K")

        def r(text: str) -> str:
            return render(text, ident)

        self.write = {
            (c, q): r(write_stream_sql(stream_notify, checkpoint=c, step_seq=q))
            for c in (False, True)
            for q in (False, True)
        }
        self.read = r(read_stream_sql())
