"""The ops app: health, metrics, scheduled checks, contract actions and custody, and the operations console."""
from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        from . import auth_audit, metrics  # noqa: F401 - auth_audit connects its signal receivers

        metrics.register()
