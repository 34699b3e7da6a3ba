"""Support for tests and benchmarks: a client session that has passed the second factor; a run-time replica alias."""
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


def register_replica(port: int, host: str = "127.0.0.1") -> None:
    """Add the `replica` database alias at run time, pointing at a replica of the primary's cluster on host:port
    (tests and benchmarks, whose replica starts after Django's settings are read). Same database name, user and
    options as the primary, with the replica's own timeouts (those DATABASE_REPLICA_URL gets); under the test runner
    it mirrors the test database, so nothing flushes it."""
    import copy

    from django.db import DEFAULT_DB_ALIAS, connections

    from . import replica
    from .database_url import replica_options

    primary = connections[DEFAULT_DB_ALIAS].settings_dict
    config = copy.deepcopy(primary)
    config.update(HOST=host, PORT=str(port), TEST={**primary.get("TEST", {}), "MIRROR": DEFAULT_DB_ALIAS})
    # The replica's own defaults (DATABASE_REPLICA_URL's), not the primary's connect timeout.
    options = {k: v for k, v in primary.get("OPTIONS", {}).items() if k != "connect_timeout"}
    config["OPTIONS"] = replica_options(options)
    connections.settings[replica.REPLICA] = config
    replica.reset()


def unregister_replica() -> None:
    """Remove the alias register_replica added (closing this thread's connection to it)."""
    from django.db import connections

    from . import replica

    if replica.REPLICA in connections.settings:
        connections[replica.REPLICA].close()
        del connections[replica.REPLICA]
        del connections.settings[replica.REPLICA]
    replica.reset()
