"""Backup roles: every staff role sees the Backups page; ops admins download a dump and start a restore test."""
from django.db import migrations

EVERYONE = ["ops.view_backuprun", "ops.view_restoretest"]
GRANTS = {
    "viewer": EVERYONE,
    "dispute reviewer": EVERYONE,
    "blacklist manager": EVERYONE,
    "contract operator": EVERYONE,
    "contract approver": EVERYONE,
    "ops admin": EVERYONE + ["ops.download_backuprun", "ops.test_backuprun"],
}


def grant(apps, schema_editor):
    from django.contrib.auth.management import create_permissions

    for config in apps.get_app_configs():
        config.models_module = True
        create_permissions(config, apps=apps, verbosity=0)
        config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, labels in GRANTS.items():
        group = Group.objects.get(name=name)
        for label in labels:
            app_label, codename = label.split(".")
            group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))


class Migration(migrations.Migration):
    dependencies = [("ops", "0018_backups")]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
