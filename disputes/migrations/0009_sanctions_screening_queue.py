"""Triggers: every wallet the mirror meets is queued for sanctions screening, whatever writes it.

The sync writes user_profiles and arbitrators with raw SQL and COPY (as does seed_demo, and staff may too): a
statement-level AFTER INSERT trigger with a transition table queues the new wallets in one INSERT per statement,
so the sync's hot path pays one small statement per transaction, not a row trigger per wallet. A wallet inserted
again (after a reorg's rollback, or a fresh local chain's reset) is queued again: it is met anew. The wallets
already in the mirror are queued once, here.
"""
from django.db import migrations

# A wallet queued again keeps its place if it is still waiting; chain: where it was first seen (its oracle is asked).
ON_CONFLICT = """
    ON CONFLICT (wallet) DO UPDATE SET
        screened_at = NULL, oracle_chain = '', oracle_block = NULL, listed = NULL,
        queued_at = CASE WHEN sanctions_screenings.screened_at IS NULL THEN sanctions_screenings.queued_at
                         ELSE EXCLUDED.queued_at END,
        chain = CASE WHEN sanctions_screenings.chain = '' THEN EXCLUDED.chain ELSE sanctions_screenings.chain END
"""

QUEUE_FN = f"""
CREATE OR REPLACE FUNCTION bo_sanctions_queue_profiles() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sanctions_screenings (wallet, chain, queued_at)
    SELECT wallet, COALESCE(first_seen_chain, ''), now() FROM new_rows {ON_CONFLICT};
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION bo_sanctions_queue_arbitrators() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO sanctions_screenings (wallet, chain, queued_at)
    SELECT DISTINCT ON (wallet) wallet, chain, now() FROM new_rows ORDER BY wallet {ON_CONFLICT};
    RETURN NULL;
END
$$;
"""

DROP_FN = ("DROP FUNCTION IF EXISTS bo_sanctions_queue_profiles() CASCADE; "
           "DROP FUNCTION IF EXISTS bo_sanctions_queue_arbitrators() CASCADE;")

BACKFILL = """
INSERT INTO sanctions_screenings (wallet, chain, queued_at)
SELECT wallet, COALESCE(first_seen_chain, ''), now() FROM user_profiles ON CONFLICT (wallet) DO NOTHING;
INSERT INTO sanctions_screenings (wallet, chain, queued_at)
SELECT DISTINCT ON (wallet) wallet, chain, now() FROM arbitrators ORDER BY wallet, registered_at
ON CONFLICT (wallet) DO NOTHING;
"""


class Migration(migrations.Migration):
    dependencies = [("disputes", "0008_sanctions_screening"), ("chain", "0013_owner_events_index")]

    operations = [
        migrations.RunSQL(QUEUE_FN, DROP_FN),
        migrations.RunSQL(
            "CREATE TRIGGER user_profiles_sanctions_queue AFTER INSERT ON user_profiles "
            "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION bo_sanctions_queue_profiles();",
            "DROP TRIGGER IF EXISTS user_profiles_sanctions_queue ON user_profiles;",
        ),
        migrations.RunSQL(
            "CREATE TRIGGER arbitrators_sanctions_queue AFTER INSERT ON arbitrators "
            "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION bo_sanctions_queue_arbitrators();",
            "DROP TRIGGER IF EXISTS arbitrators_sanctions_queue ON arbitrators;",
        ),
        migrations.RunSQL(BACKFILL, migrations.RunSQL.noop),
    ]
