"""Console defaults: the runbook's secret rotation schedule (§11); incident timelines are append-only."""
from django.db import migrations

SECRETS = [
    ("JWT_SECRET", 30, "RB-06", "All sessions invalidated",
     ["Generate a new secret (openssl rand -hex 32)", "Update JWT_SECRET in the API environment",
      "Rolling restart of the API", "Verify /health", "Expect users to re-authenticate"]),
    ("DB_PASSWORD", 90, "§11 password rotation", "Brief downtime",
     ["Generate a new password", "ALTER USER … PASSWORD", "Update DATABASE_URL everywhere", "Restart services",
      "Verify /health database check"]),
    ("REDIS_PASSWORD", 90, "§11 password rotation", "Brief downtime",
     ["Generate a new password", "Update the Redis config", "Update REDIS_URL everywhere", "Restart services",
      "Verify /health redis check"]),
    ("PINATA_API_KEY", 365, "§11", "No downtime",
     ["Generate a new key on the Pinata dashboard", "Update the environment", "Revoke the old key"]),
    ("BSCSCAN_API_KEY", 365, "§11", "No impact (deployment only)",
     ["Regenerate on BscScan", "Update the contracts environment", "Revoke the old key"]),
    ("Contract owner key", None, "§11: transfer ownership on-chain", "Requires multisig approval",
     ["Create the new owner (multisig)", "Propose transferOwnership", "Confirm on every chain",
      "Update OWNER_KEY / OWNER_KEYSTORE", "Verify owner() on every chain"]),
]

TRIGGER = """
CREATE OR REPLACE FUNCTION bo_incident_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'incident timelines are append-only: % is not allowed', TG_OP;
END
$$;
CREATE TRIGGER ops_incident_events_append_only BEFORE UPDATE OR DELETE ON ops_incident_events
    FOR EACH ROW EXECUTE FUNCTION bo_incident_events_append_only();
CREATE TRIGGER ops_secret_rotations_append_only BEFORE UPDATE OR DELETE ON ops_secret_rotations
    FOR EACH ROW EXECUTE FUNCTION bo_incident_events_append_only();
"""
REVERSE = """
DROP TRIGGER IF EXISTS ops_incident_events_append_only ON ops_incident_events;
DROP TRIGGER IF EXISTS ops_secret_rotations_append_only ON ops_secret_rotations;
DROP FUNCTION IF EXISTS bo_incident_events_append_only();
"""


def add_secrets(apps, schema_editor):
    SecretSchedule = apps.get_model("ops", "SecretSchedule")
    for name, days, procedure, impact, steps in SECRETS:
        SecretSchedule.objects.get_or_create(name=name, defaults={
            "interval_days": days, "procedure": procedure, "impact": impact, "steps": steps})


class Migration(migrations.Migration):
    dependencies = [("ops", "0009_console")]

    operations = [migrations.RunSQL(TRIGGER, REVERSE), migrations.RunPython(add_secrets, migrations.RunPython.noop)]
