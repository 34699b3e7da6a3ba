"""Triggers: blacklist wallets are canonical, and user_profiles.is_blacklisted always equals the blacklist.

Staff still run RB-04's raw SQL; these keep the two tables in agreement whatever writes them.
"""
from django.db import migrations

SYNC_FN = """
CREATE OR REPLACE FUNCTION bo_blacklist_sync_profiles() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        UPDATE user_profiles SET is_blacklisted = is_blacklisted WHERE wallet = NEW.wallet;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE user_profiles SET is_blacklisted = is_blacklisted WHERE wallet = OLD.wallet;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION bo_profile_blacklisted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.is_blacklisted := EXISTS (
        SELECT 1 FROM blacklist WHERE wallet = lower(btrim(NEW.wallet)) AND lifted_at IS NULL
    );
    RETURN NEW;
END
$$;
"""


class Migration(migrations.Migration):
    dependencies = [("disputes", "0001_initial"), ("chain", "0002_canonical_wallet_triggers")]

    operations = [
        migrations.RunSQL(
            "CREATE TRIGGER blacklist_canonical_wallets BEFORE INSERT OR UPDATE ON blacklist "
            "FOR EACH ROW WHEN (NEW.wallet IS DISTINCT FROM lower(btrim(NEW.wallet))) "
            "EXECUTE FUNCTION bo_lower_columns('wallet');",
            "DROP TRIGGER IF EXISTS blacklist_canonical_wallets ON blacklist;",
        ),
        migrations.RunSQL(
            SYNC_FN,
            "DROP FUNCTION IF EXISTS bo_blacklist_sync_profiles() CASCADE; "
            "DROP FUNCTION IF EXISTS bo_profile_blacklisted() CASCADE;",
        ),
        # Named zz_ so it runs after the canonical-wallet trigger (PostgreSQL fires BEFORE triggers by name).
        migrations.RunSQL(
            "CREATE TRIGGER zz_user_profiles_blacklisted BEFORE INSERT OR UPDATE ON user_profiles "
            "FOR EACH ROW EXECUTE FUNCTION bo_profile_blacklisted();",
            "DROP TRIGGER IF EXISTS zz_user_profiles_blacklisted ON user_profiles;",
        ),
        migrations.RunSQL(
            "CREATE TRIGGER blacklist_sync_profiles AFTER INSERT OR UPDATE OF wallet, lifted_at OR DELETE "
            "ON blacklist FOR EACH ROW EXECUTE FUNCTION bo_blacklist_sync_profiles();",
            "DROP TRIGGER IF EXISTS blacklist_sync_profiles ON blacklist;",
        ),
    ]
