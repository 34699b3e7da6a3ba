"""demo_otp: print the demo staff account's current one-time code (development only)."""
from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Print the current one-time code of the development demo account."

    def handle(self, *args, **options):
        from django_otp.oath import TOTP
        from django_otp.plugins.otp_totp.models import TOTPDevice

        if settings.PRODUCTION:
            raise CommandError("Development only.")
        device = TOTPDevice.objects.filter(user__username="ops", name="demo authenticator").first()
        if device is None:
            raise CommandError("No demo account: run `make run` (or manage.py ensure_demo_staff) first.")
        totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
        self.stdout.write(f"{totp.token():0{device.digits}d}")
