"""verify_audit_log: recompute the audit log's hash chain and name the first broken row."""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from backoffice.audit.selectors import verify_audit_chain


class Command(BaseCommand):
    help = "Verify the SHA-256 chain of audit_log; exits non-zero naming the first broken row."

    def handle(self, *args, **options):
        verdict = verify_audit_chain()
        if not verdict.ok:
            raise CommandError(f"audit_log chain broken at row {verdict.first_broken_id}: {verdict.problem} "
                               f"({verdict.rows_checked} rows checked).")
        self.stdout.write(self.style.SUCCESS(f"audit_log chain intact: {verdict.rows_checked} rows."))
