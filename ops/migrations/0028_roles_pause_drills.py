"""Pause drill roles: every staff role sees the drills; ops admins run one."""
from django.db import migrations

from backoffice.migration_helpers import grant_permissions

EVERYONE = ["ops.view_drillrun"]
GRANTS = {
    "viewer": EVERYONE,
    "dispute reviewer": EVERYONE,
    "blacklist manager": EVERYONE,
    "contract operator": EVERYONE,
    "contract approver": EVERYONE,
    "ops admin": EVERYONE + ["ops.run_drillrun"],
}


class Migration(migrations.Migration):
    dependencies = [("ops", "0027_pause_drills")]

    operations = [grant_permissions(GRANTS)]
