"""The chain app: the marketplace mirror and the one doorway to the chain (only this app imports web3)."""
from django.apps import AppConfig


class ChainConfig(AppConfig):
    name = "chain"
    verbose_name = "Chain mirror"

    def ready(self) -> None:
        from . import checks, signals  # noqa: F401 - register the custody system checks, the RPC counters' flush
