"""contract_action: propose, approve, execute, list and show owner actions as a named staff user.

    manage.py contract_action propose --as alice --chain bsc --kind set_treasury --param treasury=0x… --reason "…"
    manage.py contract_action approve 12 --as bob
    manage.py contract_action execute 12 --as alice
    manage.py contract_action sign 12 --as bob --keystore ~/bob.json      # Safe owners sign from a terminal
    manage.py contract_action pause --as alice --chain bsc --reason "RB-05: exploit suspected" [--keystore FILE]
    manage.py contract_action replace 12 --as alice --reason "stuck at low fee"
    manage.py contract_action list [--status proposed] [--chain bsc]
    manage.py contract_action show 12
    manage.py contract_action recover      # finish signed/sent actions after a crash; confirm receipts
"""
from __future__ import annotations

import getpass
import json
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management.base import BaseCommand, CommandError

from chain.keystore import KeystoreError, sign_typed_data
from ops.actions import impact
from ops.actions import services as actions
from ops.actions.selectors import safe_tx_check
from ops.models import AWAITING, IN_FLIGHT, ContractAction, Custody, SignatureSource


def add_keystore_arguments(parser) -> None:
    parser.add_argument("--keystore", help="Your encrypted key file (geth/cast/eth-account JSON keystore).")
    parser.add_argument("--password-file", help="A file holding the keystore password (default: prompt).")


def keystore_password(password_file: str | None) -> str:
    if password_file:
        return Path(password_file).read_text().rstrip("\n")
    return getpass.getpass("Keystore password: ")


class Command(BaseCommand):
    help = "Script every runbook contract step: propose, approve, execute, pause, replace, list, show, recover."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="verb", required=True)
        p = sub.add_parser("propose")
        p.add_argument("--as", dest="user", required=True)
        p.add_argument("--chain", required=True)
        p.add_argument("--kind", required=True)
        p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
        p.add_argument("--reason", required=True)
        for verb in ("approve", "execute"):
            s = sub.add_parser(verb)
            s.add_argument("id", type=int)
            s.add_argument("--as", dest="user", required=True)
        s.add_argument("--acknowledge-effects", action="store_true",
                       help="Send even though the state changes differ from the proposal's (read them with show).")
        for verb in ("reject", "replace"):
            s = sub.add_parser(verb)
            s.add_argument("id", type=int)
            s.add_argument("--as", dest="user", required=True)
            s.add_argument("--reason", required=True)
        s = sub.add_parser("sign", help="Sign a Safe action's typed data with your keystore and submit the signature.")
        s.add_argument("id", type=int)
        s.add_argument("--as", dest="user", required=True)
        add_keystore_arguments(s)
        s = sub.add_parser("pause")
        s.add_argument("--as", dest="user", required=True)
        s.add_argument("--chain", required=True)
        s.add_argument("--reason", required=True)
        add_keystore_arguments(s)
        s = sub.add_parser("list")
        s.add_argument("--status")
        s.add_argument("--chain")
        s.add_argument("--limit", type=int, default=50)
        s = sub.add_parser("show")
        s.add_argument("id", type=int)
        sub.add_parser("recover")

    def handle(self, *args, verb: str, **opts):
        try:
            getattr(self, f"do_{verb}")(**opts)
        except ValidationError as exc:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
                               if hasattr(exc, "error_dict") else "; ".join(exc.messages)) from None
        except PermissionDenied as exc:
            raise CommandError(str(exc)) from None

    def _user(self, username: str):
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None or not user.is_staff:
            raise CommandError(f"--as {username}: no active staff user of that name.")
        return user

    def _action(self, pk: int) -> ContractAction:
        action = ContractAction.objects.filter(pk=pk).first()
        if action is None:
            raise CommandError(f"No contract action #{pk}.")
        return action

    def _print(self, action: ContractAction) -> None:
        self.stdout.write(f"#{action.pk} {action.chain} {action.status} {action.description}"
                          + (f" tx={action.tx_hash}" if action.tx_hash else "")
                          + (f" — {action.outcome}" if action.outcome else ""))

    def do_propose(self, user, chain, kind, param, reason, **_):
        params = {}
        for item in param:
            name, sep, value = item.partition("=")
            if not sep:
                raise CommandError(f"--param {item!r}: expected NAME=VALUE.")
            params[name] = value
        self._print(actions.propose_contract_action(actor=self._user(user), chain=chain, kind=kind, params=params,
                                                    reason=reason))

    def do_approve(self, id, user, **_):
        self._print(actions.approve_contract_action(actor=self._user(user), action=self._action(id)))

    def do_execute(self, id, user, acknowledge_effects=False, **_):
        self._print(actions.execute_contract_action(actor=self._user(user), action=self._action(id),
                                                    acknowledge_effects=acknowledge_effects))

    def do_reject(self, id, user, reason, **_):
        self._print(actions.reject_contract_action(actor=self._user(user), action=self._action(id), reason=reason))

    def do_replace(self, id, user, reason, **_):
        self._print(actions.replace_contract_action(actor=self._user(user), action=self._action(id), reason=reason))

    def _sign(self, actor, action: ContractAction, keystore: str | None, password_file: str | None) -> ContractAction:
        if not keystore:
            raise CommandError(f"#{action.pk} needs your signature: pass --keystore FILE (your own key file; the "
                               "key is used in this process only and never stored).")
        try:
            signature = sign_typed_data(Path(keystore), keystore_password(password_file), action.typed_data)
        except KeystoreError as exc:
            raise CommandError(f"--keystore: {exc}") from None
        return actions.add_action_signature(actor=actor, action=action, signature=signature,
                                            source=SignatureSource.KEYSTORE)

    def do_sign(self, id, user, keystore=None, password_file=None, **_):
        action = self._action(id)
        if action.custody not in (Custody.SAFE, Custody.GUARDIAN):
            raise CommandError(f"#{action.pk} is sent with the server's key ({action.get_custody_display()}): "
                               "it takes no signature; use approve.")
        self._print(self._sign(self._user(user), action, keystore, password_file))

    def do_pause(self, user, chain, reason, keystore=None, password_file=None, **_):
        actor = self._user(user)
        action = actions.pause_now(actor=actor, chain=chain, reason=reason)
        if action.custody == Custody.GUARDIAN and action.status == "proposed":
            action = self._sign(actor, action, keystore, password_file)
        self._print(action)

    def do_list(self, status=None, chain=None, limit=50, **_):
        qs = ContractAction.objects.order_by("-pk")
        if status:
            qs = qs.filter(status=status)
        if chain:
            qs = qs.filter(chain=chain)
        for action in qs[:limit]:
            self._print(action)

    def do_show(self, id, **_):
        action = self._action(id)
        fields = {f.name: getattr(action, f.attname) for f in ContractAction._meta.fields if f.name != "raw_tx"}
        check = safe_tx_check(action)
        if check["hashes"]:
            # What the signer compares with the device, and the line that recomputes it without the back office.
            fields["safe_tx"] = {"fields": dict(check["safe_tx_fields"]), **check["hashes"],
                                 "cast_command": check["cast_command"]}
        # A pause not yet sent: what it holds (24 hours); an unpause: what it releases at once, and its grace.
        if action.kind == "pause" and action.status in (*AWAITING, *IN_FLIGHT):
            fields["pause_impact"] = impact.pause_impact(action.chain).as_dict()
        if action.kind == "unpause" and action.status in (*AWAITING, *IN_FLIGHT):
            fields["unpause_release"] = impact.unpause_release(action.chain).as_dict()
            fields["timeout_graces"] = [{"group": g.group, "grace_seconds": g.grace_seconds, "paused_at": g.paused_at,
                                         "unpaused_at": g.unpaused_at, "ends_at": g.ends_at}
                                        for g in impact.open_graces(action.chain)]
        self.stdout.write(json.dumps(fields, indent=2, default=str))

    def do_recover(self, **_):
        self.stdout.write(json.dumps(actions.advance_contract_actions()))
