"""Alerts, channels and deliveries move from the ops app to backoffice.alerts, below every app that raises them.

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
                    name='Alert',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('key', models.CharField(help_text='De-duplication key, e.g. reconciliation:bsc.', max_length=128)),
                        ('severity', models.CharField(choices=[('P0', 'P0 — funds at risk'), ('P1', 'P1 — service down'), ('P2', 'P2 — degraded / fraud'), ('P3', 'P3 — minor / info')], max_length=2)),
                        ('title', models.CharField(max_length=200)),
                        ('message', models.TextField(blank=True)),
                        ('source', models.CharField(help_text='The check that raised it.', max_length=64)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('last_seen_at', models.DateTimeField(auto_now_add=True)),
                        ('occurrences', models.PositiveIntegerField(default=1)),
                        ('last_sent_at', models.DateTimeField(blank=True, help_text='Last time an occurrence went to the channels (repeats are quiet).', null=True)),
                        ('acknowledged_at', models.DateTimeField(blank=True, null=True)),
                        ('acknowledged_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'ops_alerts',
                        'ordering': ['-last_seen_at'],
                    },
                ),
                migrations.CreateModel(
                    name='AlertChannel',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('name', models.CharField(max_length=64, unique=True)),
                        ('kind', models.CharField(choices=[('telegram', 'Telegram bot'), ('webhook', 'Generic webhook (JSON POST)')], max_length=10)),
                        ('enabled', models.BooleanField(default=True)),
                        ('min_severity', models.CharField(choices=[('P0', 'P0 — funds at risk'), ('P1', 'P1 — service down'), ('P2', 'P2 — degraded / fraud'), ('P3', 'P3 — minor / info')], default='P3', help_text='Send alerts of this severity and worse (P0 is the worst).', max_length=2)),
                        ('url', models.URLField(blank=True, default='', help_text='Webhook: the URL. Telegram: the API base (default https://api.telegram.org).', max_length=300)),
                        ('chat_id', models.CharField(blank=True, default='', help_text='Telegram: the chat id.', max_length=64)),
                        ('secret_env', models.CharField(blank=True, default='', help_text='Name of the environment variable holding the bot token / webhook secret (e.g. TELEGRAM_BOT_TOKEN). The value is never stored here.', max_length=64)),
                        ('consecutive_failures', models.IntegerField(default=0)),
                        ('open_until', models.DateTimeField(blank=True, help_text='Circuit breaker: no delivery attempts before this time.', null=True)),
                        ('last_error', models.TextField(blank=True, default='')),
                    ],
                    options={
                        'db_table': 'ops_alert_channels',
                        'ordering': ['name'],
                        'constraints': [models.CheckConstraint(condition=models.Q(models.Q(('kind', 'webhook'), ('url__startswith', 'http')), models.Q(('chat_id__gt', ''), ('kind', 'telegram')), _connector='OR'), name='alert_channels_configured', violation_error_message='A webhook needs a URL; a Telegram channel needs a chat id.')],
                    },
                ),
                migrations.CreateModel(
                    name='AlertDelivery',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('status', models.CharField(choices=[('pending', 'Pending'), ('sent', 'Sent'), ('failed', 'Failed (gave up)'), ('skipped', 'Skipped (repeat within the quiet period)')], default='pending', max_length=8)),
                        ('attempts', models.IntegerField(default=0)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('sent_at', models.DateTimeField(blank=True, null=True)),
                        ('last_error', models.TextField(blank=True, default='')),
                        ('alert', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='deliveries', to='alerts.alert')),
                        ('channel', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='deliveries', to='alerts.alertchannel')),
                    ],
                    options={
                        'verbose_name_plural': 'alert deliveries',
                        'db_table': 'ops_alert_deliveries',
                        'ordering': ['-created_at'],
                    },
                ),
                migrations.AddConstraint(
                    model_name='alert',
                    constraint=models.UniqueConstraint(condition=models.Q(('acknowledged_at__isnull', True)), fields=('key',), name='ops_alerts_one_open_per_key'),
                ),
            ],
            database_operations=[],
        ),
        move_content_types("alerts", ['alert', 'alertchannel', 'alertdelivery']),
    ]
