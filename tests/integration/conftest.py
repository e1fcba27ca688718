"""The database fixtures of tests/integration/db_fixtures.py for every test module here.

`db_url` runs a test on SQLite always and on PostgreSQL when CODA_SYNC_TEST_PG_URL is set
(a fresh database per test); `pg_url` is PostgreSQL only (skipped without the variable).
"""

from tests.integration.db_fixtures import db_url, pg_url

__all__ = ["db_url", "pg_url"]
