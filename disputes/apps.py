"""The disputes app: dispute review, blacklisting and arbitrator monitoring for trust and safety staff."""
from django.apps import AppConfig


class DisputesConfig(AppConfig):
    name = "disputes"
    verbose_name = "Trust and safety"

    def ready(self) -> None:
        from . import signals  # noqa: F401 - screen the wallets a sync met (chain.signals.blocks_applied)
