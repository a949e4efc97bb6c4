# Version D of tests/test_deploy.py (A plus this): a data migration without reverse code. Django
# cannot unapply it, so a rollback to A must be refused before anything changes.

from django.db import migrations


def seed(apps, schema_editor):
    Note = apps.get_model("notes", "Note")
    Note.objects.create(title="Welcome", body="Seeded by an irreversible data migration.")


class Migration(migrations.Migration):

    dependencies = [
        ("notes", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(seed),
    ]
