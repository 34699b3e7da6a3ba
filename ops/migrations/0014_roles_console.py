"""The operations console gets its role: ops admins run incidents, secret rotations and alert channels;
every staff role can read incidents."""
from django.db import migrations

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
    dependencies = [("ops", "0013_audit_as_superuser")]

    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
