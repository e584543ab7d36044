"""Read models: JSON rows kept by a projection, with the projection's position beside them.

One table serves every read model (``read_models``: model name, key, JSON data). A projection
saves the rows it changed and its tracking position (the library's ``projection_tracking``
table, one row per model) in one transaction, so after a crash it resumes exactly after the
last position it saved: nothing applied twice, nothing skipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from eventsourcing.persistence import InterfaceError, OperationalError, Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from eventsourcing.utils import retry
from psycopg.sql import SQL, Identifier
from psycopg.types.json import Jsonb

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
                "model text NOT NULL, key text NOT NULL, data jsonb NOT NULL, "
                "PRIMARY KEY (model, key))"
            ).format(table)
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

    def save(self, model: str, rows: Mapping[str, Mapping[str, Any]], position: int) -> None:
        """Upsert ``rows`` and move ``model``'s position to ``position``, in one transaction.

        Raises the library's ``IntegrityError`` when ``position`` is not past the saved one
        (another runner got there first); nothing is written then.
        """
        with self.datastore.transaction(commit=True) as curs:
            if rows:
                curs.executemany(
                    self._upsert, [(model, key, Jsonb(data)) for key, data in rows.items()]
                )
            self._insert_tracking(curs, Tracking(model, position))

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
