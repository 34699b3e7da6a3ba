"""Database triggers: wallets and hashes are lower-cased on the way in, also for raw SQL.

The CHECK constraints then refuse anything that is still not canonical. The WHEN clauses
keep bulk loads of already-canonical rows (COPY) free of the trigger's cost.
"""
from django.db import migrations

LOWER_FN = """
CREATE OR REPLACE FUNCTION bo_lower_columns() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    col text;
    patch jsonb := '{}'::jsonb;
    row_json jsonb := to_jsonb(NEW);
BEGIN
    FOREACH col IN ARRAY TG_ARGV LOOP
        IF row_json ->> col IS NOT NULL THEN
            patch := patch || jsonb_build_object(col, lower(btrim(row_json ->> col)));
        END IF;
    END LOOP;
    NEW := jsonb_populate_record(NEW, patch);
    RETURN NEW;
END
$$;
"""


def lower_trigger(table: str, *columns: str) -> migrations.RunSQL:
    when = " OR ".join(f"NEW.{c} IS DISTINCT FROM lower(btrim(NEW.{c}))" for c in columns)
    args = ", ".join(f"'{c}'" for c in columns)
    return migrations.RunSQL(
        f"CREATE TRIGGER {table}_canonical_wallets BEFORE INSERT OR UPDATE ON {table} "
        f"FOR EACH ROW WHEN ({when}) EXECUTE FUNCTION bo_lower_columns({args});",
        f"DROP TRIGGER IF EXISTS {table}_canonical_wallets ON {table};",
    )


class Migration(migrations.Migration):
    dependencies = [("chain", "0001_initial")]

    operations = [
        migrations.RunSQL(LOWER_FN, "DROP FUNCTION IF EXISTS bo_lower_columns() CASCADE;"),
        lower_trigger("user_profiles", "wallet"),
        lower_trigger("arbitrators", "wallet"),
        lower_trigger("orders", "buyer_wallet", "seller_wallet", "arbitrator_wallet", "token_address",
                      "disputed_by", "created_tx_hash", "last_tx_hash"),
    ]
