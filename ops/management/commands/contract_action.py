"""contract_action: propose, approve, execute, list and show owner actions as a named staff user.

    manage.py contract_action propose --as alice --chain bsc --kind set_treasury --param treasury=0x… --reason "…"
    manage.py contract_action approve 12 --as bob
    manage.py contract_action execute 12 --as alice
    manage.py contract_action pause --as alice --chain bsc --reason "RB-05: exploit suspected"
    manage.py contract_action replace 12 --as alice --reason "stuck at low fee"
    manage.py contract_action list [--status proposed] [--chain bsc]
    manage.py contract_action show 12
    manage.py contract_action recover      # finish signed/sent actions after a crash; confirm receipts
"""
from __future__ import annotations

import json

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management.base import BaseCommand, CommandError

from ops import actions
from ops.models import ContractAction


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
        for verb in ("reject", "replace"):
            s = sub.add_parser(verb)
            s.add_argument("id", type=int)
            s.add_argument("--as", dest="user", required=True)
            s.add_argument("--reason", required=True)
        s = sub.add_parser("pause")
        s.add_argument("--as", dest="user", required=True)
        s.add_argument("--chain", required=True)
        s.add_argument("--reason", required=True)
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

    def do_execute(self, id, user, **_):
        self._print(actions.execute_contract_action(actor=self._user(user), action=self._action(id)))

    def do_reject(self, id, user, reason, **_):
        self._print(actions.reject_contract_action(actor=self._user(user), action=self._action(id), reason=reason))

    def do_replace(self, id, user, reason, **_):
        self._print(actions.replace_contract_action(actor=self._user(user), action=self._action(id), reason=reason))

    def do_pause(self, user, chain, reason, **_):
        self._print(actions.pause_now(actor=self._user(user), chain=chain, reason=reason))

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
        self.stdout.write(json.dumps(fields, indent=2, default=str))

    def do_recover(self, **_):
        self.stdout.write(json.dumps(actions.advance_contract_actions()))
