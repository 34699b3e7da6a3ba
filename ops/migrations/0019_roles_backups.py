"""Backup roles: every staff role sees the Backups page; ops admins download a dump and start a restore test."""
from django.db import migrations

from backoffice.migration_helpers import grant_permissions

EVERYONE = ["ops.view_backuprun", "ops.view_restoretest"]
GRANTS = {
    "viewer": EVERYONE,
    "dispute reviewer": EVERYONE,
    "blacklist manager": EVERYONE,
    "contract operator": EVERYONE,
    "contract approver": EVERYONE,
    "ops admin": EVERYONE + ["ops.download_backuprun", "ops.test_backuprun"],
}


class Migration(migrations.Migration):
    dependencies = [("ops", "0018_backups")]

    operations = [grant_permissions(GRANTS)]
