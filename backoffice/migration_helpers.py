"""Helpers for migrations: granting role groups their permissions, moving models between apps without touching
their tables."""
from django.db import migrations


def move_content_types(app_label, models):
    """Keep each model's content type (and so its permissions and the role groups holding them): rename its app."""
    def forward(apps, schema_editor):
        ContentType = apps.get_model("contenttypes", "ContentType")
        for model in models:
            if not ContentType.objects.filter(app_label=app_label, model=model).exists():
                ContentType.objects.filter(app_label="ops", model=model).update(app_label=app_label)

    def backward(apps, schema_editor):
        ContentType = apps.get_model("contenttypes", "ContentType")
        for model in models:
            ContentType.objects.filter(app_label=app_label, model=model).update(app_label="ops")

    return migrations.RunPython(forward, backward)


def create_all_permissions(apps) -> None:
    """Create every model's permissions now: on a fresh database post_migrate has not run yet when a migration
    needs them."""
    from django.contrib.auth.management import create_permissions

    for config in apps.get_app_configs():
        config.models_module = True
        create_permissions(config, apps=apps, verbosity=0)
        config.models_module = None


def grant_permissions(grants: dict[str, list[str]]):
    """A RunPython that adds "app.codename" permissions to existing role groups ({group name: [labels]}).

    Permissions are created first: on a fresh database post_migrate has not run yet when a migration needs them.
    """
    def grant(apps, schema_editor):
        create_all_permissions(apps)
        Group = apps.get_model("auth", "Group")
        Permission = apps.get_model("auth", "Permission")
        for name, labels in grants.items():
            group = Group.objects.get(name=name)
            for label in labels:
                app_label, codename = label.split(".")
                group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))

    return migrations.RunPython(grant, migrations.RunPython.noop)
