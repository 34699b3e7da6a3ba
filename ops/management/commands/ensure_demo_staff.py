"""ensure_demo_staff: the development login printed by `make run`; refused in production.

The demo user is enrolled in two-factor authentication with a fixed development secret, so that
`manage.py demo_otp` (or `make otp`) can print the current code.
"""
from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError

DEMO_USERNAME = "ops"
# With "ops", the local Safe's three owners (anvil accounts 40, 41, 42): 2 of 3 sign every owner action.
DEMO_SIGNERS = {"ops": (40, None), "ops-bob": (41, "contract approver"), "ops-carol": (42, "contract approver")}
DEMO_PASSWORD = "ops-demo-password"
# A published development-only TOTP secret (20 bytes, hex). Never used outside development.
DEMO_TOTP_KEY = "3132333435363738393031323334353637383930"


class Command(BaseCommand):
    help = ("Create the development demo staff accounts (ops, ops-bob, ops-carol / ops-demo-password, 2FA enrolled, "
            "their Safe owner keys registered). Never in production.")

    def handle(self, *args, **options):
        from django_otp.plugins.otp_totp.models import TOTPDevice

        if settings.PRODUCTION:
            raise CommandError("Production never has a demo account: create staff with `createsuperuser`.")
        User = get_user_model()
        for username, (index, group) in DEMO_SIGNERS.items():
            user, created = User.objects.get_or_create(username=username, defaults={
                "is_staff": True, "is_superuser": group is None, "email": f"{username}@example.invalid"})
            if created:
                user.set_password(DEMO_PASSWORD)
                user.save()
                if group:
                    user.groups.add(Group.objects.get(name=group))
            TOTPDevice.objects.get_or_create(user=user, name="demo authenticator",
                                             defaults={"key": DEMO_TOTP_KEY, "confirmed": True})
            self._register_key(user, index)
        self.stdout.write(f"Demo staff login: {DEMO_USERNAME} / {DEMO_PASSWORD}, then the code from `make otp` "
                          f"(also {', '.join(n for n in DEMO_SIGNERS if n != DEMO_USERNAME)}: the Safe's other owners)")

    def _register_key(self, user, index: int) -> None:
        """The demo signer's owner address, registered the way staff do it: by signing the challenge."""
        from backoffice.devservices import anvil_key
        from chain.keystore import sign_text_with_key
        from ops.actions import services as actions
        from ops.models import StaffSigningKey

        challenge = actions.signing_key_challenge(user=user)
        address, signature = sign_text_with_key(anvil_key(index), challenge)
        if StaffSigningKey.objects.filter(address=address).exists():
            return
        actions.register_signing_key(actor=user, address=address, challenge=challenge, signature=signature,
                                     label="demo (anvil development account)")
