"""TRUNCATE of audit_log is allowed only where the *database* carries bo.allow_truncate_audit=on.

A session-level `SET bo.allow_truncate_audit = on` no longer suffices: the setting must come from
`ALTER DATABASE ... SET`, which only the test suite does, on its throw-away database.
"""
from django.db import migrations

SQL = """
CREATE OR REPLACE FUNCTION bo_audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' AND current_setting('bo.allow_truncate_audit', true) = 'on' AND EXISTS (
        SELECT 1 FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
        WHERE d.datname = current_database() AND s.setrole = 0
          AND 'bo.allow_truncate_audit=on' = ANY (s.setconfig)
    ) THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
"""

REVERSE = """
CREATE OR REPLACE FUNCTION bo_audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' AND current_setting('bo.allow_truncate_audit', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
"""


class Migration(migrations.Migration):
    dependencies = [("ops", "0003_alerts")]

    operations = [migrations.RunSQL(SQL, REVERSE)]
