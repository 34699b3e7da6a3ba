"""Staff roles as groups: least privilege, each sees and does only what it needs."""
from django.db import migrations

from backoffice.migration_helpers import create_all_permissions

VIEW = [
    "chain.view_order", "chain.view_userprofile", "chain.view_arbitrator", "chain.view_eventsynccursor",
    "chain.view_chainevent", "chain.view_rpcprovider", "chain.view_token", "chain.view_reconciliationdrift",
    "disputes.view_blacklist", "disputes.view_disputecase", "disputes.view_disputenote", "disputes.view_reviewflag",
    "disputes.view_disputedorder", "ops.view_contractaction", "ops.view_alert", "ops.view_platformflag",
]
ROLES = {
    "viewer": VIEW,
    "dispute reviewer": VIEW + ["disputes.review_dispute", "disputes.change_reviewflag"],
    "blacklist manager": VIEW + ["disputes.add_blacklist", "disputes.change_blacklist"],
    "contract operator": VIEW + ["ops.add_contractaction", "ops.execute_contractaction",
                                 "chain.change_eventsynccursor"],
    "contract approver": VIEW + ["ops.approve_contractaction"],
    "ops admin": VIEW + ["ops.view_auditlog", "ops.change_alert", "ops.change_platformflag",
                         "django_celery_beat.view_periodictask", "django_celery_beat.change_periodictask",
                         "auth.view_user", "auth.view_group"],
}


def create_roles(apps, schema_editor):
    create_all_permissions(apps)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, perms in ROLES.items():
        group, _ = Group.objects.get_or_create(name=name)
        wanted = []
        for label in perms:
            app_label, codename = label.split(".")
            perm = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
            if perm is None:
                raise RuntimeError(f"permission {label} does not exist")
            wanted.append(perm)
        group.permissions.set(wanted)


class Migration(migrations.Migration):
    dependencies = [
        ("ops", "0007_contract_action_permissions"),
        ("chain", "0004_amounts_refuse_nan"),
        ("disputes", "0005_dispute_queue"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(create_roles, migrations.RunPython.noop)]
