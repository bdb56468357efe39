"""SQL text of the PostgreSQL queue operations: claim variants, delayed promotion and queue statistics.

A claim is one statement (03 §21 rule 4, 07 §6.4). Which limits are set changes its shape, so the text is built
per `ClaimShape` and cached by the store. Within the statement:

- `x` cancels the claimer's eligible ENQUEUED rows whose deadline passed, found through the `deadline` index;
- `bud` is the queue-wide budget B = min(max_rows, G - PENDING, L - claims in the window), clamped at 0;
- unpartitioned: `cand` takes up to B eligible rows in claim order `FOR UPDATE SKIP LOCKED`;
- partitioned: `lk` lists the lanes with ENQUEUED rows by a loose index scan (each step seeks the next key in
  the `lane` or `active` index: one probe per lane, never the backlog), plus the "no key" lane; `heads` finds
  each lane's first eligible row (lanes without one drop out), `ls` its room (PG, PL, PW terms) and rate slot,
  `rk` orders the lanes with room (head priority, then fairness), `lr` reads each one's first rows (bounded, see
  below) and `pk` interleaves them round-robin up to B; `cand` locks the picks
  `FOR UPDATE SKIP LOCKED` (a locked pick is skipped, not replaced: the claim takes fewer rows);
- `cl` is the guarded claim `UPDATE ... WHERE status = 'ENQUEUED' RETURNING`, the only truth about what was
  claimed; `qc` logs one `queue_claims` row per claim on a rate-limited queue, `del` prunes old ones.

A lane of rank i (1-based among the N lanes with room) can only be reached by the round robin if i <= B, and
then contributes at most 1 + max(0, B - N) rows, because every lane with room has an eligible head. That bounds
the rows read per lane (`lr`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg import sql

from . import records
from .postgres_conn import NOW_MS
from .postgres_sql import WORKFLOW_COLUMNS, cols, render, templates, workflow_select_list

_T = f"_t AS (SELECT {NOW_MS} AS ms)"
_NOW = "(SELECT ms FROM _t)"
_B = "(SELECT b FROM bud)"


def _scope(a: str) -> str:
    """The claimer's ENQUEUED rows of the queue (03 §13): registered name, application and version (pinned to
    the claimer's, or version-less while the claimer runs the newest live version, `nl`)."""
    return (
        f"{a}.status = 'ENQUEUED' AND {a}.queue_name = %(queue_name)s AND {a}.name = ANY(%(names)s::text[]) "
        f"AND ({a}.application_name = %(application_name)s::text OR {a}.application_name IS NULL) "
        f"AND ({a}.application_version = %(application_version)s::text "
        f"OR ({a}.application_version IS NULL AND (SELECT ok FROM nl)))"
    )


# True when no live (ALIVE, lease not expired) executor of the claimer's application runs a version newer than
# the claimer's: larger version_timestamp, ties broken by name (03 §13 rule 2, 07 §3.2 rule 7). A claimer
# version without a version row counts as older than every registered one; a claimer without an application
# name has no peers to defer to. One probe of the executors index per claim, inside the claim statement.
_NEWEST_LIVE = (
    "nl AS (SELECT NOT EXISTS (SELECT 1 FROM {s}.executors e JOIN {s}.app_versions v "
    "ON v.application_name = e.application_name AND v.version_name = e.application_version "
    "WHERE e.application_name = %(application_name)s::text AND e.state = 'ALIVE' "
    f"AND e.lease_expires_at >= {_NOW} AND (v.version_timestamp, v.version_name) > ("
    "COALESCE((SELECT m.version_timestamp FROM {s}.app_versions m WHERE m.application_name = "
    "%(application_name)s::text AND m.version_name = %(application_version)s::text), -1), "
    "COALESCE(%(application_version)s::text, ''))) AS ok)"
)


# The lane index's order. Leading with partition_key (constant within a lane) lets the "no key" lane's
# `partition_key IS NULL` scan use the index order too: IS NULL is no equality, so the planner would otherwise
# sort, or walk the `claim` index through every keyed row of the queue.
_LANE_ORDER = "w.partition_key, w.priority DESC, w.seq"

# ... and eligible now: its deadline is still ahead (passed ones are cancelled by the same statement).
_ELIGIBLE = f"{_scope('w')} AND (w.deadline_ms IS NULL OR w.deadline_ms > {_NOW})"


@dataclass(frozen=True, slots=True)
class ClaimShape:
    """Which terms a claim statement computes; one cached statement per shape."""

    partitioned: bool
    global_concurrency: bool  # G
    rate: bool  # L
    partition_concurrency: bool = False  # PG (partitioned only)
    partition_rate: bool = False  # PL (partitioned only)
    log_claims: bool = False  # one queue_claims row per claim
    prune: bool = False  # delete queue_claims rows older than the retention


def _lane_union(body: str, *, alias: str) -> str:
    """`body` twice, as the keyed-lane and the "no key" branches of a lane scan, gated on `{alias}.nokey` (a
    one-time filter, so only one branch runs per lane). `LANE` in `body` stands for the lane condition on `w`."""
    keyed = body.replace("LANE", f"NOT {alias}.nokey AND w.partition_key = {alias}.k")
    nokey = body.replace("LANE", f"{alias}.nokey AND w.partition_key IS NULL")
    return f"({keyed}) UNION ALL ({nokey})"


def _budget(shape: ClaimShape) -> str:
    # A paused queue claims nothing; the pause row is read in the claim's own snapshot (03 §18 rule 8).
    terms = [
        "CASE WHEN EXISTS (SELECT 1 FROM {s}.queue_pauses qp WHERE qp.queue_name = %(queue_name)s) "
        "THEN 0 ELSE %(max_rows)s::bigint END"
    ]
    sources: list[str] = []
    slot = "NULL::bigint"
    if shape.global_concurrency:
        terms.append("%(g)s::bigint - pend.n")
        sources.append(
            "(SELECT count(*) AS n FROM {s}.workflows w WHERE w.queue_name = %(queue_name)s "
            "AND w.status = 'PENDING') AS pend"
        )
    if shape.rate:
        terms.append("%(rate_limit)s::bigint - win.n")
        sources.append(
            "(SELECT count(*) AS n, min(c.claimed_at) AS oldest FROM {s}.queue_claims c "
            f"WHERE c.queue_name = %(queue_name)s AND c.claimed_at > {_NOW} - %(rate_period)s::bigint) AS win"
        )
        slot = "CASE WHEN %(rate_limit)s::bigint - win.n <= 0 THEN win.oldest + %(rate_period)s::bigint END"
    src = f" FROM {', '.join(sources)}" if sources else ""
    return f"bud AS (SELECT GREATEST(0, LEAST({', '.join(terms)})) AS b, {slot} AS slot{src})"


def _cancel_expired() -> str:
    """The claimer's eligible ENQUEUED rows whose deadline passed (at most 1000, earliest deadline first),
    found through the `deadline` index."""
    return (
        "x AS (UPDATE {s}.workflows w SET status = 'CANCELLED', cancel_reason = 'deadline', completed_at = _t.ms, "
        "updated_at = _t.ms FROM _t WHERE w.workflow_id IN (SELECT e.workflow_id FROM {s}.workflows e "
        f"WHERE e.deadline_ms <= {_NOW} AND e.status IN ('PENDING', 'ENQUEUED', 'DELAYED') AND {_scope('e')} "
        "ORDER BY e.deadline_ms, e.seq LIMIT 1000 FOR UPDATE OF e SKIP LOCKED) AND w.status = 'ENQUEUED' "
        "RETURNING w.workflow_id, w.queue_name, w.deadline_ms, w.seq)"
    )


def _unpartitioned_candidates() -> str:
    return (
        "cand AS (SELECT w.workflow_id "
        f"FROM {{s}}.workflows w WHERE {_ELIGIBLE} ORDER BY w.priority DESC, w.seq LIMIT {_B} "
        "FOR UPDATE OF w SKIP LOCKED)"
    )


def _lane_scan(shape: ClaimShape) -> list[str]:
    """The CTEs from lane discovery to the locked, round-robin-ordered candidates."""
    gate = f"{_B} > 0"
    lanes = (
        "lk AS ((SELECT w.partition_key AS k FROM {s}.workflows w WHERE w.status = 'ENQUEUED' "
        f"AND w.queue_name = %(queue_name)s AND w.partition_key IS NOT NULL AND {gate} "
        "ORDER BY w.partition_key LIMIT 1) "
        "UNION ALL SELECT (SELECT w.partition_key FROM {s}.workflows w WHERE w.status = 'ENQUEUED' "
        "AND w.queue_name = %(queue_name)s AND w.partition_key > lk.k ORDER BY w.partition_key LIMIT 1) "
        "FROM lk WHERE lk.k IS NOT NULL)"
    )
    all_lanes = (
        "lanes AS (SELECT k, false AS nokey FROM lk WHERE k IS NOT NULL "
        f"UNION ALL SELECT NULL::text, true WHERE {gate})"
    )
    # A lane exists for the claim if it has an eligible row: its head (the "no key" lane's head probe is its
    # existence check, in the lane index's order).
    head = _lane_union(
        f"SELECT w.priority, w.seq FROM {{s}}.workflows w WHERE LANE AND {_ELIGIBLE} ORDER BY {_LANE_ORDER} LIMIT 1",
        alias="l",
    )
    heads = f"heads AS (SELECT l.k, l.nokey, h.priority AS hp, h.seq AS hs FROM lanes l CROSS JOIN LATERAL ({head}) h)"
    terms = [
        _B,
        "COALESCE((%(local_vals)s::bigint[])[array_position(%(local_keys)s::text[], l.k)], %(pw)s::bigint)",
    ]
    # Per-lane counts are grouped once per claim (one pass over the queue's PENDING rows or its rate window)
    # rather than probed per lane, so no plan choice can make them cost lanes x rows. They join the lanes on
    # (nokey, key), which tells the "no key" lane from a key '' and stays hashable.
    extra: list[str] = []
    joins = ""
    slot = "NULL::bigint"
    if shape.partition_concurrency:
        extra.append(
            "lp AS (SELECT w.partition_key IS NULL AS nokey, COALESCE(w.partition_key, '') AS k, count(*) AS n "
            "FROM {s}.workflows w WHERE w.queue_name = %(queue_name)s AND w.status = 'PENDING' "
            f"AND {gate} GROUP BY w.partition_key)"
        )
        joins += " LEFT JOIN lp ON lp.nokey = l.nokey AND lp.k = COALESCE(l.k, '')"
        terms.append("%(pg)s::bigint - COALESCE(lp.n, 0)")
    if shape.partition_rate:
        extra.append(
            "lw AS (SELECT c.partition_key IS NULL AS nokey, COALESCE(c.partition_key, '') AS k, count(*) AS n, "
            "min(c.claimed_at) AS oldest FROM {s}.queue_claims c WHERE c.queue_name = %(queue_name)s "
            f"AND c.claimed_at > {_NOW} - %(pl_period)s::bigint AND {gate} GROUP BY c.partition_key)"
        )
        joins += " LEFT JOIN lw ON lw.nokey = l.nokey AND lw.k = COALESCE(l.k, '')"
        terms.append("%(pl_limit)s::bigint - COALESCE(lw.n, 0)")
        slot = "CASE WHEN %(pl_limit)s::bigint - COALESCE(lw.n, 0) <= 0 THEN lw.oldest + %(pl_period)s::bigint END"
    rooms = (
        f"ls AS (SELECT l.k, l.nokey, l.hp, l.hs, LEAST({', '.join(terms)}) AS room, {slot} AS slot "
        f"FROM heads l{joins})"
    )
    pos = "array_position(%(lane_order)s::text[], ls.k)"
    ranked = (
        "rk AS (SELECT ls.k, ls.nokey, ls.room, "
        f"row_number() OVER (ORDER BY ls.hp DESC, {pos} IS NOT NULL, {pos}, ls.hs) AS rank, "
        "count(*) OVER () AS nl FROM ls WHERE ls.room > 0)"
    )
    rows = _lane_union(
        f"SELECT w.workflow_id, w.priority, w.seq FROM {{s}}.workflows w WHERE LANE AND {_ELIGIBLE} "
        f"ORDER BY {_LANE_ORDER} LIMIT LEAST(rk.room, CASE WHEN rk.rank <= {_B} "
        f"THEN 1 + GREATEST(0, {_B} - rk.nl) ELSE 0 END)",
        alias="rk",
    )
    lane_rows = (
        "lr AS (SELECT rk.rank, r.workflow_id, row_number() OVER (PARTITION BY rk.rank "
        f"ORDER BY r.priority DESC, r.seq) AS rn FROM rk CROSS JOIN LATERAL ({rows}) r)"
    )
    picks = (
        "pk AS (SELECT lr.workflow_id, row_number() OVER (ORDER BY lr.rn, lr.rank) AS ord FROM lr "
        f"ORDER BY lr.rn, lr.rank LIMIT {_B})"
    )
    cand = (
        "cand AS (SELECT w.workflow_id FROM {s}.workflows w "
        "WHERE w.workflow_id = ANY(ARRAY(SELECT pk.workflow_id FROM pk)) AND w.status = 'ENQUEUED' "
        "FOR UPDATE OF w SKIP LOCKED)"
    )
    return [lanes, all_lanes, heads, *extra, rooms, ranked, lane_rows, picks, cand]


def claim_sql(shape: ClaimShape, t: dict[str, str]) -> str:
    """The claim statement of one shape; `t` holds the notify templates of `postgres_sql`."""
    wf_cols = workflow_select_list(load_input=True, load_output=True, alias="w")
    wf = t["wf_notify"].replace("KEY", "x.workflow_id")
    q = t["queue_notify"].replace("KEY", "x.queue_name")
    ctes = [_T, _NEWEST_LIVE, _cancel_expired(), _budget(shape)]
    if shape.partitioned:
        ctes += _lane_scan(shape)
        slot = "(SELECT LEAST(bud.slot, (SELECT min(ls.slot) FROM ls)) FROM bud)"
    else:
        ctes.append(_unpartitioned_candidates())
        slot = "(SELECT slot FROM bud)"
    ctes.append(
        "cl AS (UPDATE {s}.workflows w SET status = 'PENDING', executor_id = %(executor_id)s, "
        "incarnation = %(incarnation)s, claim_token = md5(gen_random_uuid()::text || gen_random_uuid()::text), "
        "claim_batch = %(batch_token)s, dequeued_at = _t.ms, updated_at = _t.ms, "
        "recovery_attempts = w.recovery_attempts + 1, "
        "application_version = COALESCE(w.application_version, %(application_version)s::text), "
        "deadline_ms = COALESCE(w.deadline_ms, _t.ms + w.timeout_ms) "
        "FROM _t WHERE w.workflow_id = ANY(ARRAY(SELECT c.workflow_id FROM cand c)) AND w.status = 'ENQUEUED' "
        f"RETURNING {wf_cols}, w.recovery_attempts - 1 AS prev_attempts, w.steps_seeded)"
    )
    if shape.log_claims:
        ctes.append(
            "qc AS (INSERT INTO {s}.queue_claims (queue_name, partition_key, claimed_at, workflow_id) "
            "SELECT %(queue_name)s, cl.partition_key, _t.ms, cl.workflow_id FROM cl, _t)"
        )
    if shape.prune:
        ctes.append(
            "del AS (DELETE FROM {s}.queue_claims c WHERE c.queue_name = %(queue_name)s "
            f"AND c.claimed_at < {_NOW} - {records.RATE_CLAIMS_RETENTION_MS})"
        )
    ctes.append(
        "n AS (SELECT array_agg(x.workflow_id ORDER BY x.deadline_ms, x.seq) AS cancelled, "
        f"string_agg({wf} || coalesce({q}, ''), '') AS sent FROM x)"
    )
    recursive = "RECURSIVE " if shape.partitioned else ""
    # The round-robin position of each claimed row (unpartitioned: NULL, the caller orders by priority, seq).
    order, claimed = (
        ("pk.ord", "(cl LEFT JOIN pk ON pk.workflow_id = cl.workflow_id)")
        if shape.partitioned
        else ("NULL", "cl")
    )
    return (
        f"WITH {recursive}{', '.join(ctes)} "
        f"SELECT n.cancelled, n.sent IS NULL, {slot}, {cols(WORKFLOW_COLUMNS, 'cl')}, cl.prev_attempts, "
        f"cl.steps_seeded, {order} FROM n LEFT JOIN {claimed} ON true"
    )


def claim_readback_sql() -> str:
    readback_cols = workflow_select_list(load_input=True, load_output=True)
    return (
        f"SELECT NULL, true, NULL, {readback_cols}, recovery_attempts - 1, steps_seeded, NULL FROM {{s}}.workflows "
        "WHERE queue_name = %(queue_name)s AND status = 'PENDING' AND claim_batch = %(batch_token)s "
        "AND executor_id = %(executor_id)s AND incarnation = %(incarnation)s"
    )


def promote_sql(t: dict[str, str]) -> str:
    q = t["queue_notify"].replace("KEY", "d.queue_name")
    return (
        f"WITH {_T}, "
        "c AS (SELECT w.workflow_id FROM {s}.workflows w "
        f"WHERE w.status = 'DELAYED' AND w.delay_until <= {_NOW} ORDER BY w.delay_until, w.seq "
        "LIMIT %(limit)s FOR UPDATE OF w SKIP LOCKED), "
        "u AS (UPDATE {s}.workflows w SET status = 'ENQUEUED', "
        "queue_name = COALESCE(w.queue_name, %(internal)s::text), updated_at = _t.ms FROM _t "
        "WHERE w.workflow_id = ANY(ARRAY(SELECT c.workflow_id FROM c)) AND w.status = 'DELAYED' "
        "RETURNING w.workflow_id, w.queue_name, w.delay_until, w.seq), "
        f"n AS (SELECT string_agg({q}, '') AS sent FROM (SELECT DISTINCT u.queue_name FROM u) d) "
        "SELECT (SELECT w.delay_until FROM {s}.workflows w WHERE w.status = 'DELAYED' "
        "AND w.workflow_id NOT IN (SELECT u.workflow_id FROM u) ORDER BY w.delay_until LIMIT 1), "
        "n.sent IS NULL, "
        "(SELECT array_agg(u.workflow_id ORDER BY u.delay_until, u.seq) FROM u), "
        "(SELECT array_agg(u.queue_name ORDER BY u.delay_until, u.seq) FROM u) FROM n"
    )


def queue_stats_sql(*, one: bool) -> str:
    """Counts of the rows the `active` index lists (never a terminal row), hash-grouped by (queue, status, key)
    so that only the small grouped result is sorted; the oldest ENQUEUED row is one probe by its `seq`."""
    scope = "AND w.queue_name = %(queue_name)s " if one else ""
    return (
        "WITH a AS (SELECT w.queue_name, w.status, w.partition_key, count(*) AS n, min(w.seq) AS first_seq "
        "FROM {s}.workflows w "
        "WHERE w.status IN ('ENQUEUED', 'DELAYED', 'PENDING') AND w.queue_name IS NOT NULL "
        f"{scope}GROUP BY w.queue_name, w.status, w.partition_key), "
        "g AS (SELECT a.queue_name, COALESCE(sum(a.n) FILTER (WHERE a.status = 'ENQUEUED'), 0) AS enqueued, "
        "COALESCE(sum(a.n) FILTER (WHERE a.status = 'DELAYED'), 0) AS delayed, "
        "COALESCE(sum(a.n) FILTER (WHERE a.status = 'PENDING'), 0) AS pending, "
        "min(a.first_seq) FILTER (WHERE a.status = 'ENQUEUED') AS first_seq, "
        "count(DISTINCT a.partition_key) FILTER (WHERE a.status <> 'DELAYED') AS partitions FROM a "
        "GROUP BY a.queue_name), "
        # ENQUEUED rows by (application, version), for `stranded` (03 §13 rule 5); the version columns are not
        # in the index, so this reads the ENQUEUED rows themselves.
        "v AS MATERIALIZED (SELECT w.queue_name, w.application_name, w.application_version, count(*) AS n "
        "FROM {s}.workflows w WHERE w.status = 'ENQUEUED' AND w.queue_name IS NOT NULL "
        f"{scope}GROUP BY w.queue_name, w.application_name, w.application_version) "
        "SELECT g.queue_name, g.enqueued, g.delayed, g.pending, "
        "(SELECT o.created_at FROM {s}.workflows o WHERE o.seq = g.first_seq), g.partitions, "
        "(SELECT json_agg(json_build_array(v.application_name, v.application_version, v.n)) FROM v "
        "WHERE v.queue_name = g.queue_name) FROM g ORDER BY g.queue_name"
    )


@dataclass
class QueueStatements:
    """The rendered queue statements of one schema; claim statements are rendered per shape on first use."""

    schema: str
    claim_readback: str = ""
    promote: str = ""
    stats_all: str = ""
    stats_one: str = ""
    _claims: dict[ClaimShape, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._ident = sql.Identifier(self.schema)
        self._t = templates(self.schema)
        self.claim_readback = render(claim_readback_sql(), self._ident)
        self.promote = render(promote_sql(self._t), self._ident)
        self.stats_all = render(queue_stats_sql(one=False), self._ident)
        self.stats_one = render(queue_stats_sql(one=True), self._ident)

    def claim(self, shape: ClaimShape) -> str:
        text = self._claims.get(shape)
        if text is None:
            text = self._claims[shape] = render(claim_sql(shape, self._t), self._ident)
        return text
