"""Automatic pause roles: every staff role sees each chain's triggers; ops admins switch one off or on (audited)."""
from django.db import migrations

from backoffice.migration_helpers import grant_permissions

EVERYONE = ["ops.view_autopauseswitch"]
GRANTS = {
    "viewer": EVERYONE,
    "dispute reviewer": EVERYONE,
    "blacklist manager": EVERYONE,
    "contract operator": EVERYONE,
    "contract approver": EVERYONE,
    "ops admin": EVERYONE + ["ops.change_autopauseswitch"],
}


class Migration(migrations.Migration):
    dependencies = [("ops", "0025_auto_pause")]

    operations = [grant_permissions(GRANTS)]
