"""import_sanctions_list: import a sanctions list file or URL as a new version and re-screen every known wallet."""
from __future__ import annotations

from pathlib import Path

import requests
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from disputes.sanctions.services import download_list, import_sanctions_list


class Command(BaseCommand):
    help = ("Import OFAC's SDN XML (sdn_advanced.xml or sdn.xml) or a derived address list "
            "(sanctioned_addresses_ETH.txt) from a file or URL as a new list version; every wallet we have seen is "
            "screened against its new entries.")

    def add_arguments(self, parser):
        parser.add_argument("source", metavar="FILE|URL")
        parser.add_argument("--asset", default=None,
                            help="The asset an address list's addresses are listed under (ETH, USDT, ...), when its "
                                 "name is not sanctioned_addresses_<ASSET>.txt.")
        parser.add_argument("--force", action="store_true",
                            help="Import despite a refusal for shrinking by more than a fifth or for values that are "
                                 "not addresses (those are skipped). Needs --reason; audited.")
        parser.add_argument("--reason", default="", help="Why the refusal is wrong (with --force).")

    def handle(self, *args, source: str, asset: str | None, force: bool, reason: str, **options):
        published_at = None
        if source.startswith(("https://", "http://")):
            try:
                data, published_at = download_list(source)
            except (requests.RequestException, ValueError) as exc:
                raise CommandError(f"Could not download {source}: {exc}") from None
        else:
            path = Path(source)
            if not path.is_file():
                raise CommandError(f"{source}: no such file (give a path, or an http(s) URL).")
            data = path.read_bytes()
        try:
            version = import_sanctions_list(actor="system:import_sanctions_list command", data=data, source=source,
                                            asset=asset, force=force, force_reason=reason, published_at=published_at)
        except ValidationError as exc:
            raise CommandError("Nothing was imported: " + " ".join(exc.messages)) from None
        published = f"published {version.published_at:%Y-%m-%d}, " if version.published_at else ""
        self.stdout.write(self.style.SUCCESS(
            f"{version.list_key} version #{version.pk}: {published}{version.entry_count:,} addresses "
            f"(+{version.added_count:,} −{version.removed_count:,}), SHA-256 {version.sha256}; "
            f"{version.hit_count} of our wallet(s) hit."))
        for note in version.notes[:10]:
            self.stdout.write(f"  note: {note}")
