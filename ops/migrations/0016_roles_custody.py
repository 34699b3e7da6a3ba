"""Custody roles: ops admins see every staff signing key and revoke a leaver's; everyone else sees their own."""
from django.db import migrations

GRANTS = {
    "ops admin": ["ops.view_staffsigningkey", "ops.change_staffsigningkey"],
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
    dependencies = [("ops", "0015_custody")]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
