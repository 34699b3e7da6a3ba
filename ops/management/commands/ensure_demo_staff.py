"""ensure_demo_staff: the development login printed by `make run`; refused in production."""
from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

DEMO_USERNAME = "ops"
DEMO_PASSWORD = "ops-demo-password"


class Command(BaseCommand):
    help = "Create the development demo staff account (ops / ops-demo-password). Never in production."

    def handle(self, *args, **options):
        if settings.PRODUCTION:
            raise CommandError("Production never has a demo account: create staff with `createsuperuser`.")
        User = get_user_model()
        user, created = User.objects.get_or_create(username=DEMO_USERNAME, defaults={
            "is_staff": True, "is_superuser": True, "email": "ops@example.invalid"})
        if created:
            user.set_password(DEMO_PASSWORD)
            user.save()
        self.stdout.write(f"Demo staff login: {DEMO_USERNAME} / {DEMO_PASSWORD}")
