"""Support for tests and benchmarks: a client session that has passed the second factor."""
from __future__ import annotations

import time


def verify_second_factor(client, user) -> None:
    """Mark `client`'s session (already logged in as `user`) OTP-verified with a fresh step-up,
    as after a real password + one-time-code login. Never used by the application itself."""
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from .security import STEPUP_AT

    device = TOTPDevice.objects.filter(user=user, confirmed=True).first() or \
        TOTPDevice.objects.create(user=user, name="test authenticator", confirmed=True)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session[STEPUP_AT] = time.time()
    session.save()
