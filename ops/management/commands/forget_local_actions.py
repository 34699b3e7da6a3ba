"""forget_local_actions: make run's fresh local chains start with no contract actions of the old ones."""
from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from ops.actions.local import forget_local_contract_actions


class Command(BaseCommand):
    help = ("Development only: forget the contract actions and signer nonces of local chains that were replaced by "
            "fresh ones (audited). Refused in production.")

    def handle(self, *args, **options):
        try:
            count = forget_local_contract_actions(actor="system:make-run")
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        if count:
            self.stdout.write(f"Forgot {count} contract action(s) of the previous local chains.")
