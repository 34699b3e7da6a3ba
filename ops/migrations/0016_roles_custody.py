"""Custody roles: ops admins see every staff signing key and revoke a leaver's; everyone else sees their own."""
from django.db import migrations

from backoffice.migration_helpers import grant_permissions

GRANTS = {
    "ops admin": ["ops.view_staffsigningkey", "ops.change_staffsigningkey"],
}


class Migration(migrations.Migration):
    dependencies = [("ops", "0015_custody")]

    operations = [grant_permissions(GRANTS)]
