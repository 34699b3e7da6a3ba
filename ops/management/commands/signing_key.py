"""signing_key: register your own signing address from a terminal, or list the registered keys.

    manage.py signing_key register --as bob --keystore ~/bob.json [--label laptop] [--password-file F]
    manage.py signing_key list
"""
from __future__ import annotations

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management.base import BaseCommand, CommandError

from chain.keystore import KeystoreError, sign_text
from ops.actions import services as actions
from ops.management.commands.contract_action import add_keystore_arguments, keystore_password
from ops.models import StaffSigningKey


class Command(BaseCommand):
    help = "Register a staff member's signing key by signing the challenge with their keystore; list keys."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="verb", required=True)
        r = sub.add_parser("register")
        r.add_argument("--as", dest="user", required=True)
        r.add_argument("--label", default="")
        add_keystore_arguments(r)
        sub.add_parser("list")

    def handle(self, *args, verb: str, **opts):
        if verb == "list":
            for key in StaffSigningKey.objects.select_related("user"):
                self.stdout.write(f"{key.address} {key.user.get_username()} {key.label or '-'}"
                                  f"{' revoked ' + key.revoked_at.isoformat() if key.revoked_at else ''}")
            return
        user = get_user_model().objects.filter(username=opts["user"], is_active=True, is_staff=True).first()
        if user is None:
            raise CommandError(f"--as {opts['user']}: no active staff user of that name.")
        if not opts.get("keystore"):
            raise CommandError("--keystore FILE is required: the key that will sign contract actions.")
        challenge = actions.signing_key_challenge(user=user)
        try:
            address, signature = sign_text(Path(opts["keystore"]), keystore_password(opts.get("password_file")),
                                           challenge)
            key = actions.register_signing_key(actor=user, address=address, challenge=challenge, signature=signature,
                                               label=opts["label"])
        except KeystoreError as exc:
            raise CommandError(f"--keystore: {exc}") from None
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        except PermissionDenied as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"registered {key.address} for {user.get_username()}")
