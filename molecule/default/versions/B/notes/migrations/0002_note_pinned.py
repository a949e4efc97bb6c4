# Version B of tests/test_deploy.py: a reversible schema change (AddField).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("notes", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="note",
            name="pinned",
            field=models.BooleanField(db_default=False, default=False),
        ),
    ]
