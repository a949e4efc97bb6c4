import time

from django.db import migrations


def slow(apps, schema_editor):
    time.sleep(2)


class Migration(migrations.Migration):
    dependencies = [("shop", "0003_seed")]
    operations = [migrations.RunPython(slow, migrations.RunPython.noop)]
