"""Schema migrations, applied in order by ``PRAGMA user_version``.

Each entry is ``(version, statements)``. A version's statements and its ``user_version``
bump run in one transaction, so a crash mid-migration leaves the previous version intact.
Append new versions; never edit a released one.
"""

from __future__ import annotations

__all__ = ["MIGRATIONS", "SCHEMA_VERSION"]

MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """
            CREATE TABLE tasks (
                id            TEXT PRIMARY KEY,
                type          TEXT NOT NULL,
                status        TEXT NOT NULL,
                run           INTEGER NOT NULL DEFAULT 0,
                params        TEXT,
                result        TEXT,
                error         TEXT,
                schedule      TEXT,
                timeout       REAL,
                lease         INTEGER NOT NULL DEFAULT 0,
                submitted_at  TEXT NOT NULL,
                started_at    TEXT,
                completed_at  TEXT,
                next_run_at   TEXT
            )
            """,
            # Newest-first listing and the `before` cursor walk this index backwards.
            "CREATE INDEX idx_tasks_submitted ON tasks (submitted_at, id)",
            # The scheduler's one query for the earliest due schedule.
            "CREATE INDEX idx_tasks_next_run ON tasks (next_run_at) WHERE schedule IS NOT NULL",
            # Listing by status walks this newest first, and start-up recovery finds the
            # interrupted rows without scanning every record. (Status changes move a row's
            # entry once per run, what a partial index on the active states cost too.)
            "CREATE INDEX idx_tasks_status ON tasks (status, submitted_at, id)",
            """
            CREATE TABLE task_runs (
                task_id       TEXT NOT NULL,
                run           INTEGER NOT NULL,
                status        TEXT NOT NULL,
                started_at    TEXT,
                completed_at  TEXT,
                result        TEXT,
                error         TEXT,
                PRIMARY KEY (task_id, run)
            )
            """,
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)",
        ],
    ),
]

SCHEMA_VERSION = MIGRATIONS[-1][0]
