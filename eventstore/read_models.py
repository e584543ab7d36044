"""Read models: JSON rows kept by a projection, with the projection's position beside them.

One table serves every read model (``read_models``: model name, key, JSON data). A projection
saves the rows it changed and its tracking position (the library's ``projection_tracking``
table, one row per model) in one transaction, so after a crash it resumes exactly after the
last position it saved: nothing applied twice, nothing skipped.

``data`` is a ``json`` column, not ``jsonb``: ``jsonb`` refuses ``\u0000`` (and escapes of lone
surrogates) because PostgreSQL's text type cannot hold them, so one NUL in a task's title made
the task list's save fail on every restart. ``json`` keeps the text it is given (ASCII-escaped
by :func:`json.dumps`), so a row holds exactly what the events hold. No query looks inside
``data``; the column is read whole. A store made before this is migrated on open.

A row PostgreSQL refuses all the same (a constraint, a size limit) does not stop a save: the
batch is saved again row by row, each under a savepoint, and :meth:`ReadModelRecorder.save`
returns the refused rows' keys with the reasons, for the projection to mark them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg
from eventsourcing.persistence import (
    InterfaceError,
    OperationalError,
    PersistenceError,
    Tracking,
)
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from eventsourcing.utils import retry
from psycopg.sql import SQL, Identifier, Literal
from psycopg.types.json import Json

from .errors import one_line

READ_MODELS_TABLE = "read_models"
TRACKING_TABLE = "projection_tracking"


class ReadModelRecorder(PostgresTrackingRecorder):
    """Rows of read models plus their tracking positions, written atomically."""

    def __init__(self, datastore: PostgresDatastore) -> None:
        super().__init__(datastore, tracking_table_name=TRACKING_TABLE)
        schema = Identifier(datastore.schema)
        table = SQL("{}.{}").format(schema, Identifier(READ_MODELS_TABLE))
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                "model text NOT NULL, key text NOT NULL, data json NOT NULL, "
                "PRIMARY KEY (model, key))"
            ).format(table)
        )
        # Stores made before ``data`` became ``json`` (see the module docstring).
        self.sql_create_statements.append(
            SQL(
                "DO $$ BEGIN "
                "IF (SELECT data_type FROM information_schema.columns WHERE table_schema = {} "
                "AND table_name = {} AND column_name = 'data') = 'jsonb' THEN "
                "ALTER TABLE {} ALTER COLUMN data TYPE json USING data::json; "
                "END IF; END $$"
            ).format(Literal(datastore.schema), Literal(READ_MODELS_TABLE), table)
        )
        self._select_keys = SQL(
            "SELECT key, data FROM {} WHERE model = %s AND key = ANY(%s)"
        ).format(table)
        self._select_page = SQL(
            "SELECT key, data FROM {} WHERE model = %s AND key > %s ORDER BY key LIMIT %s"
        ).format(table)
        self._upsert = SQL(
            "INSERT INTO {} (model, key, data) VALUES (%s, %s, %s) "
            "ON CONFLICT (model, key) DO UPDATE SET data = EXCLUDED.data"
        ).format(table)
        self._delete_model = SQL("DELETE FROM {} WHERE model = %s").format(table)
        self._rename_model = SQL("UPDATE {} SET model = %s WHERE model = %s").format(table)
        self._rename_tracking = SQL(
            "UPDATE {}.{} SET application_name = %s WHERE application_name = %s"
        ).format(schema, Identifier(TRACKING_TABLE))
        self._delete_tracking = SQL("DELETE FROM {}.{} WHERE application_name = %s").format(
            schema, Identifier(TRACKING_TABLE)
        )

    @retry((InterfaceError, OperationalError), max_attempts=3, wait=0.2)
    def get_rows(self, model: str, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The current rows of ``model`` for ``keys`` (missing keys are absent)."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._select_keys, (model, list(keys)))
            return {row["key"]: row["data"] for row in curs.fetchall()}

    @retry((InterfaceError, OperationalError), max_attempts=3, wait=0.2)
    def rows(self, model: str, *, after: str = "", limit: int = 1000) -> list[tuple[str, Any]]:
        """A page of ``model``'s rows in key order, after key ``after``."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._select_page, (model, after, limit))
            return [(row["key"], row["data"]) for row in curs.fetchall()]

    def save(
        self,
        model: str,
        rows: Mapping[str, Mapping[str, Any]],
        position: int,
        instead: Callable[[str, str], Mapping[str, Any]] | None = None,
    ) -> dict[str, str]:
        """Upsert ``rows`` and move ``model``'s position to ``position``, in one transaction;
        return the rows PostgreSQL refused, {key: reason}.

        A refused row is replaced by ``instead(key, reason)`` when given (a row that says
        what went wrong), else left as it was. Raises the library's ``IntegrityError`` when
        ``position`` is not past the saved one (another runner got there first); nothing is
        written then.
        """
        params = [(model, key, Json(data)) for key, data in rows.items()]
        try:
            with self.datastore.transaction(commit=True) as curs:
                if params:
                    curs.executemany(self._upsert, params)
                self._insert_tracking(curs, Tracking(model, position))
            return {}
        except PersistenceError as e:  # the library's wrapper of psycopg's error
            if not isinstance(e.__cause__, _Refused):
                raise
        refused: dict[str, str] = {}
        with self.datastore.transaction(commit=True) as curs:
            for _, key, data in params:
                try:
                    with curs.connection.transaction():  # a savepoint per row
                        curs.execute(self._upsert, (model, key, data))
                except _Refused as e:
                    refused[key] = one_line(e)
                    if instead is None:
                        continue
                    try:
                        with curs.connection.transaction():
                            curs.execute(
                                self._upsert, (model, key, Json(instead(key, refused[key])))
                            )
                    except _Refused:
                        pass  # the row stays as it was saved last
            self._insert_tracking(curs, Tracking(model, position))
        return refused

    def position(self, model: str) -> int:
        """The last log position ``model`` has applied (0 before the first)."""
        return self.max_tracking_id(model) or 0

    def replace(self, model: str, staging: str) -> None:
        """Make ``staging``'s rows and position ``model``'s, dropping ``model``'s old ones,
        in one transaction (a rebuild's swap: readers see the old list or the new one)."""
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(self._delete_model, (model,))
            curs.execute(self._delete_tracking, (model,))
            curs.execute(self._rename_model, (model, staging))
            curs.execute(self._rename_tracking, (model, staging))

    def reset(self, model: str) -> None:
        """Forget ``model``'s rows and position, in one transaction (for a rebuild)."""
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(self._delete_model, (model,))
            curs.execute(self._delete_tracking, (model,))


# What PostgreSQL answers when it refuses a row's data (not the position: that is a
# UniqueViolation on the tracking table, an IntegrityError of the library).
_Refused = (psycopg.errors.DataException, psycopg.errors.CheckViolation,
            psycopg.errors.ProgramLimitExceeded)
