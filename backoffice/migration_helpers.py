"""Helpers for migrations that move models between apps without touching their tables."""
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
