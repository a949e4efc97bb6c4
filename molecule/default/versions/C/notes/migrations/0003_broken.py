# Version C of tests/test_deploy.py (B plus this): a migration that fails, as a data migration
# meeting unexpected data would. The deploy must stop before the switch, with B still serving.

from django.db import migrations


def fail(apps, schema_editor):
    raise RuntimeError("deploy checks: migration 0003_broken fails on purpose")


class Migration(migrations.Migration):

    dependencies = [
        ("notes", "0002_note_pinned"),
    ]

    operations = [
        migrations.RunPython(fail, migrations.RunPython.noop),
    ]
