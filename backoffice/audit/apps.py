"""The audit log: the floor every app stands on (chain, disputes and ops all write to it)."""
from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "backoffice.audit"
    label = "audit"
    verbose_name = "Audit"
