"""Contract actions: what was proposed, and once signed what was signed, can never change (trigger);
platform flags get their defaults (the kill switch and the runbook's risk thresholds)."""
from django.db import migrations

SQL = """
CREATE OR REPLACE FUNCTION bo_contract_action_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.chain IS DISTINCT FROM OLD.chain OR NEW.kind IS DISTINCT FROM OLD.kind
       OR NEW.params IS DISTINCT FROM OLD.params OR NEW.calldata IS DISTINCT FROM OLD.calldata
       OR NEW.calldata_hash IS DISTINCT FROM OLD.calldata_hash OR NEW.to_address IS DISTINCT FROM OLD.to_address
       OR NEW.reason IS DISTINCT FROM OLD.reason OR NEW.proposed_by_id IS DISTINCT FROM OLD.proposed_by_id THEN
        RAISE EXCEPTION 'contract action %: the proposal (call, parameters, reason, proposer) cannot change', OLD.id;
    END IF;
    IF OLD.raw_tx <> '' AND (NEW.raw_tx IS DISTINCT FROM OLD.raw_tx OR NEW.nonce IS DISTINCT FROM OLD.nonce
       OR NEW.tx_hash IS DISTINCT FROM OLD.tx_hash) THEN
        RAISE EXCEPTION 'contract action %: the signed transaction cannot change', OLD.id;
    END IF;
    IF OLD.approved_by_id IS NOT NULL AND NEW.approved_by_id IS DISTINCT FROM OLD.approved_by_id THEN
        RAISE EXCEPTION 'contract action %: the approval cannot change', OLD.id;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER ops_contract_actions_frozen BEFORE UPDATE ON ops_contract_actions
    FOR EACH ROW EXECUTE FUNCTION bo_contract_action_frozen();
CREATE OR REPLACE FUNCTION bo_refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are kept as a record: DELETE is not allowed', TG_TABLE_NAME;
END
$$;
CREATE TRIGGER ops_contract_actions_no_delete BEFORE DELETE ON ops_contract_actions
    FOR EACH ROW EXECUTE FUNCTION bo_refuse_delete();
"""

REVERSE = """
DROP TRIGGER IF EXISTS ops_contract_actions_frozen ON ops_contract_actions;
DROP TRIGGER IF EXISTS ops_contract_actions_no_delete ON ops_contract_actions;
DROP FUNCTION IF EXISTS bo_contract_action_frozen();
DROP FUNCTION IF EXISTS bo_refuse_delete();
"""

FLAGS = [
    ("TRADES_ENABLED", True, "Kill switch: false while an emergency stop is in force."),
    ("LARGE_ORDER_USDT", 5000, "Alert threshold: a single order above this amount (runbook alert table)."),
    ("DISPUTE_RATE_ALERT_PCT", 20, "Alert threshold: dispute rate over 24 h (RB-04)."),
    ("SYNC_LAG_ALERT_BLOCKS", 100, "Alert threshold: sync lag in blocks (RB-03)."),
]


def add_flags(apps, schema_editor):
    PlatformFlag = apps.get_model("ops", "PlatformFlag")
    for key, value, description in FLAGS:
        PlatformFlag.objects.get_or_create(key=key, defaults={"value": value, "description": description})


class Migration(migrations.Migration):
    dependencies = [("ops", "0005_contract_actions")]

    operations = [
        migrations.RunSQL(SQL, REVERSE),
        migrations.RunPython(add_flags, migrations.RunPython.noop),
    ]
