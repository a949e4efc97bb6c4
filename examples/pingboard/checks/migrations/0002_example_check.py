"""Create one example check, so a fresh installation has something to ping."""

import uuid

from django.db import migrations

EXAMPLE_CODE = uuid.UUID("00000000-0000-4000-8000-000000000001")


def create_example(apps, schema_editor):
    Check = apps.get_model("checks", "Check")
    Check.objects.get_or_create(code=EXAMPLE_CODE, defaults={"name": "example", "timeout": 3600})


def delete_example(apps, schema_editor):
    Check = apps.get_model("checks", "Check")
    Check.objects.filter(code=EXAMPLE_CODE).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("checks", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(create_example, delete_example),
    ]
