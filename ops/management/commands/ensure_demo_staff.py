"""ensure_demo_staff: the development login printed by `make run`; refused in production.

The demo user is enrolled in two-factor authentication with a fixed development secret, so that
`manage.py demo_otp` (or `make otp`) can print the current code.
"""
from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

DEMO_USERNAME = "ops"
DEMO_PASSWORD = "ops-demo-password"
# A published development-only TOTP secret (20 bytes, hex). Never used outside development.
DEMO_TOTP_KEY = "3132333435363738393031323334353637383930"


class Command(BaseCommand):
    help = "Create the development demo staff account (ops / ops-demo-password, 2FA enrolled). Never in production."

    def handle(self, *args, **options):
        from django_otp.plugins.otp_totp.models import TOTPDevice

        if settings.PRODUCTION:
            raise CommandError("Production never has a demo account: create staff with `createsuperuser`.")
        User = get_user_model()
        user, created = User.objects.get_or_create(username=DEMO_USERNAME, defaults={
            "is_staff": True, "is_superuser": True, "email": "ops@example.invalid"})
        if created:
            user.set_password(DEMO_PASSWORD)
            user.save()
        TOTPDevice.objects.get_or_create(user=user, name="demo authenticator",
                                         defaults={"key": DEMO_TOTP_KEY, "confirmed": True})
        self.stdout.write(f"Demo staff login: {DEMO_USERNAME} / {DEMO_PASSWORD}, then the code from `make otp`")
