"""Migration files are pinned by `migrations/manifest.json` and numbered alike on both backends (07 §9.1).

A released migration never changes (rule 4): editing one changes its SHA-256 and fails here. A new migration is
added to the manifest in the same change, on both backends of its pair (rule 1: a number is the same logical change
on both backends, and a no-op on one still gets a file holding only a comment).
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from pathlib import Path, PurePosixPath

import psycopg
import pytest
from psycopg import sql

from dbos._store import migrate, open_system_store
from dbos._store.base import StoreSettings

MIGRATIONS = resources.files("dbos._store") / "migrations"
MANIFEST = MIGRATIONS / "manifest.json"
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"

# 07 §9.1 rule 1: the sets, as (system-database pair, application-database pair).
PAIRS = [("sqlite", "postgres"), ("appdb_sqlite", "appdb_postgres")]
KNOWN_SETS = {s for pair in PAIRS for s in pair}
REQUIRED_SETS = {"sqlite", "postgres"}
FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def _manifest() -> dict[str, dict[str, str]]:
    data = json.loads(MANIFEST.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _sets_on_disk() -> dict[str, dict[str, bytes]]:
    """Every migration-set directory and its files (any file, so a stray one is noticed)."""
    return {
        d.name: {f.name: f.read_bytes() for f in d.iterdir() if f.is_file()}
        for d in MIGRATIONS.iterdir()
        if d.is_dir() and not d.name.startswith("__")
    }


def test_manifest_is_well_formed_and_canonical() -> None:
    text = MANIFEST.read_text(encoding="utf-8")
    manifest = _manifest()
    assert text == json.dumps(manifest, indent=2, sort_keys=True) + "\n", (
        "keep manifest.json pretty and sorted"
    )
    assert REQUIRED_SETS <= set(manifest) <= KNOWN_SETS
    for set_name, files in manifest.items():
        assert isinstance(files, dict) and files, set_name
        for filename, digest in files.items():
            assert FILE_RE.match(filename), f"{set_name}/{filename}: not NNNN_name.sql"
            assert re.fullmatch(r"[0-9a-f]{64}", digest), (
                f"{set_name}/{filename}: not a lowercase hex SHA-256"
            )


def test_every_file_is_listed_with_its_checksum() -> None:
    manifest = _manifest()
    on_disk = _sets_on_disk()
    assert set(on_disk) == set(manifest), "every migration set is listed in manifest.json, and only those"
    for set_name, files in on_disk.items():
        assert set(files) == set(manifest[set_name]), f"{set_name}: files and manifest entries differ"
        for filename, data in files.items():
            assert hashlib.sha256(data).hexdigest() == manifest[set_name][filename], (
                f"{set_name}/{filename} changed after release (07 §9.1 rule 4): add a new migration instead"
            )


def test_numbers_are_contiguous_from_0001() -> None:
    for set_name, files in _manifest().items():
        numbers = [int(f[:4]) for f in sorted(files)]  # names are checked against FILE_RE above
        assert numbers == list(range(1, len(numbers) + 1)), f"{set_name}: numbers {numbers}"


def test_each_number_has_the_same_file_on_both_backends() -> None:
    manifest = _manifest()
    for a, b in PAIRS:
        if a not in manifest and b not in manifest:
            continue
        assert a in manifest and b in manifest, f"set {a!r} and set {b!r} come together"
        assert sorted(manifest[a]) == sorted(manifest[b]), f"{a} and {b} differ in numbers or names"


def test_runner_reads_the_pinned_files() -> None:
    """The runner's parse (header agrees with the file name, 07 §9.1 rule 2) sees the manifest's checksums."""
    for set_name, files in _manifest().items():
        loaded = migrate.load_migrations(set_name)
        assert {m.filename: m.checksum for m in loaded} == files
        for m in loaded:
            assert m.compatible_from <= m.version, m.filename


def test_applied_rows_record_the_pinned_checksums(backend: str, db_url: str) -> None:
    store = open_system_store(db_url, StoreSettings(role="tool"))
    try:
        store.migrate()
    finally:
        store.close()
    query = "SELECT version, name, checksum FROM {} ORDER BY version"
    if backend == "sqlite":
        import sqlite3

        conn = sqlite3.connect(db_url.removeprefix("sqlite:///"))
        try:
            rows = conn.execute(query.format("dbos_schema_migrations")).fetchall()
        finally:
            conn.close()
    else:
        with psycopg.connect(db_url) as pg:
            rows = pg.execute(sql.SQL(query).format(sql.Identifier("dbos", "schema_migrations"))).fetchall()
    applied = {f"{v:04d}_{n}.sql": c for v, n, c in rows}
    assert applied == _manifest()[backend]


def test_package_data_ships_the_manifest_and_every_file() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    patterns = [
        PurePosixPath(p)
        for p in tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["setuptools"]["package-data"][
            "dbos"
        ]
    ]

    def shipped(path: PurePosixPath) -> bool:  # setuptools globs: `*` stays within one path segment
        return any(len(p.parts) == len(path.parts) and path.match(str(p)) for p in patterns)

    assert shipped(PurePosixPath("_store/migrations/manifest.json")), patterns
    for set_name, files in _manifest().items():
        for filename in files:
            assert shipped(PurePosixPath("_store/migrations", set_name, filename)), (set_name, filename)
