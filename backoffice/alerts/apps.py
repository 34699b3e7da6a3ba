"""Alerts and their delivery to Telegram and webhooks: raised by every app's checks, below all of them."""
from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "backoffice.alerts"
    label = "alerts"
    verbose_name = "Alerts"
