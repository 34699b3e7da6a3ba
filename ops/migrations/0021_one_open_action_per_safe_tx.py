# One open action per SafeTx, held by the database. Before the index is built, any duplicates the older code let
# through (the same SafeTx proposed twice and still open) are closed: the most advanced stays open (in flight, else
# approved, else the one holding most signatures, else the first); the others become rejected, saying which one
# they duplicate, so that a signature they hold is still counted by the custody check ("can still execute").

from django.conf import settings
from django.db import migrations, models

OPEN = ["proposed", "approved", "signed", "sent"]
IN_FLIGHT = ["signed", "sent"]


def close_duplicates(apps, schema_editor):
    ContractAction = apps.get_model("ops", "ContractAction")
    open_safe = ContractAction.objects.filter(custody="safe", replaces__isnull=True, status__in=OPEN).exclude(signing_hash="")
    hashes = (open_safe.values("signing_hash").annotate(n=models.Count("pk")).filter(n__gt=1)
              .values_list("signing_hash", flat=True))
    for signing_hash in hashes:
        rows = list(open_safe.filter(signing_hash=signing_hash).annotate(signed=models.Count("signatures")))
        flying = [r.pk for r in rows if r.status in IN_FLIGHT]
        if len(flying) > 1:
            raise RuntimeError(f"Contract actions {flying} are the same SafeTx {signing_hash} and both in flight: "
                               "let `manage.py contract_action recover` settle them, then migrate again.")
        keep = min(rows, key=lambda r: (r.status not in IN_FLIGHT, r.status != "approved", -r.signed, r.pk))
        for row in rows:
            if row.pk != keep.pk:
                row.status = "rejected"
                row.outcome = (f"closed by migration 0021: action #{keep.pk} is the same SafeTx (one open action per "
                               "SafeTx); nothing was sent")
                row.save(update_fields=["status", "outcome"])


class Migration(migrations.Migration):

    dependencies = [
        ('ops', '0020_chains_from_configuration'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunPython(close_duplicates, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name='contractaction',
            constraint=models.UniqueConstraint(condition=models.Q(('custody', 'safe'), ('replaces__isnull', True), ('status__in', ['proposed', 'approved', 'signed', 'sent']), models.Q(('signing_hash', ''), _negated=True)), fields=('signing_hash',), name='contract_actions_one_open_per_safe_tx', violation_error_message='This SafeTx already has an open action.'),
        ),
    ]
