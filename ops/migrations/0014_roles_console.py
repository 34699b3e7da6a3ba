"""The operations console gets its role: ops admins run incidents, secret rotations and alert channels;
every staff role can read incidents."""
from django.db import migrations

from backoffice.migration_helpers import grant_permissions

GRANTS = {
    "viewer": ["ops.view_incident"],
    "dispute reviewer": ["ops.view_incident"],
    "blacklist manager": ["ops.view_incident"],
    "contract operator": ["ops.view_incident"],
    "contract approver": ["ops.view_incident"],
    "ops admin": ["ops.view_incident", "ops.add_incident", "ops.change_incident",
                  "ops.view_alertchannel", "ops.add_alertchannel", "ops.change_alertchannel",
                  "ops.view_alertdelivery", "ops.view_opsreport",
                  "ops.view_secretschedule", "ops.change_secretschedule",
                  "ops.view_secretrotation", "ops.add_secretrotation"],
}


class Migration(migrations.Migration):
    dependencies = [("ops", "0013_audit_as_superuser")]

    operations = [grant_permissions(GRANTS)]
