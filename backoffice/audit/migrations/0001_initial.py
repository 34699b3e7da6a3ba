"""The audit log moves from the ops app to backoffice.audit, below every app that writes it.

The tables stay where the ops app created them (same names, triggers and data): only Django's state and the
content types move, so permissions and role groups carry over.
"""
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

from backoffice.migration_helpers import move_content_types


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("contenttypes", "0002_remove_content_type_name"),
        ("ops", "0016_roles_custody"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='AuditLog',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('created_at', models.DateTimeField(help_text='When the change was committed (UTC).')),
                        ('actor_label', models.CharField(help_text='Username, or system:<task> for automation.', max_length=150)),
                        ('as_superuser', models.BooleanField(default=False, help_text='Done with superuser powers (audited as such).')),
                        ('action', models.CharField(db_index=True, help_text='Service name, e.g. blacklist_wallet.', max_length=64)),
                        ('object_type', models.CharField(blank=True, max_length=64)),
                        ('object_id', models.CharField(blank=True, max_length=128)),
                        ('object_repr', models.CharField(blank=True, max_length=200)),
                        ('before', models.JSONField(blank=True, null=True)),
                        ('after', models.JSONField(blank=True, null=True)),
                        ('reason', models.TextField(blank=True)),
                        ('prev_hash', models.CharField(help_text='row_hash of the previous row (64 zeros for the first).', max_length=64)),
                        ('row_hash', models.CharField(max_length=64, unique=True)),
                        ('actor', models.ForeignKey(blank=True, help_text='Staff user; empty for the system.', null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'verbose_name': 'audit record',
                        'db_table': 'audit_log',
                        'ordering': ['-id'],
                        'indexes': [models.Index(fields=['created_at'], name='audit_log_created_idx'), models.Index(fields=['object_type', 'object_id'], name='audit_log_object_idx'), models.Index(fields=['actor_label', 'created_at'], name='audit_log_actor_idx')],
                    },
                ),
            ],
            database_operations=[],
        ),
        move_content_types("audit", ['auditlog']),
    ]
