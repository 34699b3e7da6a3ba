"""deploy_local_contracts: deploy the escrow contracts to the local anvil nodes (make run)."""
from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from backoffice.devservices import DEMO_SANCTIONED
from chain import local


class Command(BaseCommand):
    help = ("Deploy P2PEscrow, ArbitratorPool and test tokens to local nodes, in a 2-of-3 Safe's custody unless "
            "--custody says eoa; write the deployment file.")
    # The checks read the chains the deployment file names: before this command has written it, that is the last
    # run's (make run's anvils are new each time), and every check reading it would warn of a node that is gone.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser):
        parser.add_argument("--chain", action="append", default=[], metavar="NAME=URL",
                            help="A chain and its local RPC URL, e.g. bsc=http://127.0.0.1:8545 (repeatable).")
        parser.add_argument("--confirmations", action="append", default=[], metavar="NAME=N")
        parser.add_argument("--custody", action="append", default=[], metavar="NAME=safe|eoa",
                            help="Who owns a chain's contracts: safe (a Safe of anvil accounts 40-42, the default) "
                                 "or eoa (anvil account 0). Repeatable.")
        parser.add_argument("--reset-mirror", action="store_true", help="Empty the mirror tables (fresh chain).")
        parser.add_argument("--timeouts", default="", metavar="SELLER,BUYER,DISPUTE",
                            help="The escrow's windows in seconds on every chain, e.g. 180,300,480 (make run: every "
                                 "state, timeouts included, happens in real time). Default: the contract's days.")
        parser.add_argument("--no-demo-sanctions", action="store_true",
                            help="Deploy the local sanctions oracle listing nobody (the alarm benchmarks' quiet "
                                 "market), instead of the demo market's two sanctioned traders.")

    def handle(self, *args, chain, confirmations, custody, reset_mirror, timeouts, no_demo_sanctions=False,
               **options):
        if settings.PRODUCTION:
            raise CommandError("Local deployment is for development only.")
        windows = None
        if timeouts:
            parts = timeouts.split(",")
            if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
                raise CommandError(f"--timeouts {timeouts!r}: expected three positive whole seconds, "
                                   "SELLER,BUYER,DISPUTE, e.g. 180,300,480.")
            windows = tuple(int(p) for p in parts)
        depths = dict(item.split("=", 1) for item in confirmations)
        modes = {}
        for item in custody:
            name, _, mode = item.partition("=")
            if name not in settings.CHAINS or mode not in local.CUSTODY_MODES:
                raise CommandError(f"--custody {item!r}: expected NAME=safe or NAME=eoa with NAME one of "
                                   f"{', '.join(settings.CHAINS)}.")
            modes[name] = mode
        chains = {}
        for item in chain:
            name, _, url = item.partition("=")
            if name not in settings.CHAINS or not url:
                raise CommandError(f"--chain {item!r}: expected NAME=URL with NAME one of "
                                   f"{', '.join(settings.CHAINS)}.")
            chains[name] = {"rpc_url": url, "confirmations": int(depths.get(name, 2)),
                            "custody": modes.get(name, "safe"), "timeouts": windows,
                            "sanctioned": () if no_demo_sanctions else DEMO_SANCTIONED}
        if reset_mirror:
            local.reset_mirror()
        for name, info in local.deploy_local(chains).items():
            self.stdout.write(f"{name}: escrow {info['escrow']}, pool {info['arbitrator_pool']}, "
                              f"tokens {', '.join(info['tokens'])} (chain id {info['chain_id']})")
            held = info["custody"]
            if held["mode"] == "safe":
                self.stdout.write(f"{name}: owner Safe {held['safe']}, {held['threshold']} of "
                                  f"{len(held['owners'])} owners {', '.join(held['owners'])}; "
                                  f"guardian module {held['guardian_module']}")
            else:
                self.stdout.write(f"{name}: owner {info['owner']} (eoa custody)")
            self.stdout.write(f"{name}: relayer {held['relayer']}, keeper {held['keeper']}")
            self.stdout.write(f"{name}: sanctions oracle {info['sanctions_oracle']} listing "
                              f"{', '.join(info['sanctioned']) or 'nobody'}")
