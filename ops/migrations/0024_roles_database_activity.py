"""RB-02 role: ops admins see the database's connections and end the idle ones."""
from django.db import migrations

from backoffice.migration_helpers import grant_permissions

GRANTS = {"ops admin": ["ops.view_database_activity", "ops.terminate_idle_connections"]}


class Migration(migrations.Migration):
    dependencies = [("ops", "0023_database_activity_permissions")]

    operations = [grant_permissions(GRANTS)]
