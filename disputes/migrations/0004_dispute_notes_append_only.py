"""Dispute notes are append-only: UPDATE and DELETE are refused by the database."""
from django.db import migrations

SQL = """
CREATE OR REPLACE FUNCTION bo_dispute_notes_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'dispute notes are append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER dispute_notes_append_only BEFORE UPDATE OR DELETE ON dispute_notes
    FOR EACH ROW EXECUTE FUNCTION bo_dispute_notes_append_only();
"""
REVERSE = """
DROP TRIGGER IF EXISTS dispute_notes_append_only ON dispute_notes;
DROP FUNCTION IF EXISTS bo_dispute_notes_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("disputes", "0003_dispute_review")]

    operations = [migrations.RunSQL(SQL, REVERSE)]
