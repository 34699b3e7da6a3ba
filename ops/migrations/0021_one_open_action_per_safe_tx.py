# One open action per SafeTx, held by the database. Before the index is built, any duplicates the older code let
# through (the same SafeTx proposed twice and still awaiting signatures) are closed: the one already in flight, or
# else the first proposed, stays open; the others become stale, saying which one they duplicate.

from django.conf import settings
from django.db import migrations, models

OPEN = ["proposed", "approved", "signed", "sent"]
AWAITING = ["proposed", "approved"]


def close_duplicates(apps, schema_editor):
    ContractAction = apps.get_model("ops", "ContractAction")
    open_safe = ContractAction.objects.filter(custody="safe", replaces__isnull=True, status__in=OPEN).exclude(signing_hash="")
    hashes = (open_safe.values("signing_hash").annotate(n=models.Count("pk")).filter(n__gt=1)
              .values_list("signing_hash", flat=True))
    for signing_hash in hashes:
        rows = list(open_safe.filter(signing_hash=signing_hash).order_by("pk"))
        keep = next((r for r in rows if r.status not in AWAITING), rows[0])
        for row in rows:
            if row.pk != keep.pk and row.status in AWAITING:
                row.status = "stale"
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
