"""Sign-in events go to the audit log: logins, failed logins, lockouts, logouts (never passwords or addresses)."""
from __future__ import annotations

from axes.signals import user_locked_out
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from backoffice.security import SESSION_STARTED, _audit


def _username(credentials: dict) -> str:
    name = str((credentials or {}).get("username", ""))[:150]
    return "".join(ch if ch.isprintable() else "?" for ch in name) or "(empty)"


@receiver(user_logged_in)
def audit_login(sender, request, user, **kwargs) -> None:
    import time

    if request is not None and hasattr(request, "session"):
        request.session[SESSION_STARTED] = time.time()
    _audit(user, "login", "password accepted" + (" (superuser)" if user.is_superuser else ""))


@receiver(user_logged_out)
def audit_logout(sender, request, user, **kwargs) -> None:
    if user is not None:
        _audit(user, "logout", "session ended")


@receiver(user_login_failed)
def audit_login_failed(sender, credentials, request=None, **kwargs) -> None:
    _audit(f"anonymous:{_username(credentials)}", "login_failed", "wrong username or password")


@receiver(user_locked_out)
def audit_lockout(sender, request, username, ip_address, **kwargs) -> None:
    _audit(f"anonymous:{_username({'username': username})}", "lockout", "too many failed sign-ins")
