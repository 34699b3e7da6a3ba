"""The ops app, in rooms: owner actions (`actions`), the console (`console`), backups (`backups`) and monitoring
(`monitoring`); the models of all four stay in `ops.models` (Django's app registry)."""
from django.apps import AppConfig


class OpsConfig(AppConfig):
    name = "ops"
    verbose_name = "Operations"

    def ready(self) -> None:
        from .console import auth_audit  # noqa: F401 - connects its signal receivers
        from .monitoring import metrics, receivers  # noqa: F401 - receivers: the certain checks after a sync

        metrics.register()
