"""audit_log is append-only: UPDATE, DELETE and TRUNCATE are refused by the database itself.

The one exception is TRUNCATE in a database whose owner set `bo.allow_truncate_audit = on`
(`ALTER DATABASE ... SET`): the test suite's throw-away database, which Django flushes between
transactional tests. Production databases never carry that setting.
"""
from django.db import migrations

SQL = """
CREATE OR REPLACE FUNCTION bo_audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' AND current_setting('bo.allow_truncate_audit', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION bo_audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION bo_audit_log_append_only();
"""

REVERSE = """
DROP TRIGGER IF EXISTS audit_log_no_update_delete ON audit_log;
DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log;
DROP FUNCTION IF EXISTS bo_audit_log_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("ops", "0001_initial")]

    operations = [migrations.RunSQL(SQL, REVERSE)]
