"""The audit log and alerts (with channels and deliveries) now belong to backoffice.audit and backoffice.alerts.

State only: the tables, their triggers and their rows stay as they are.
"""
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("alerts", "0001_initial"),
        ("audit", "0001_initial"),
        ("ops", "0016_roles_custody"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveField(model_name="alertdelivery", name="alert"),
                migrations.RemoveField(model_name="alertdelivery", name="channel"),
                migrations.RemoveField(model_name="auditlog", name="actor"),
                migrations.AlterField(
                    model_name="incident",
                    name="alerts",
                    field=models.ManyToManyField(blank=True, related_name="incidents", to="alerts.alert"),
                ),
                migrations.DeleteModel(name="Alert"),
                migrations.DeleteModel(name="AlertChannel"),
                migrations.DeleteModel(name="AlertDelivery"),
                migrations.DeleteModel(name="AuditLog"),
            ],
            database_operations=[],
        ),
    ]
