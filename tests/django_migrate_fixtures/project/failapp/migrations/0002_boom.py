from django.db import migrations


def boom(apps, schema_editor):
    raise RuntimeError("boom: this migration always fails")


class Migration(migrations.Migration):
    dependencies = [("failapp", "0001_ok")]
    operations = [migrations.RunPython(boom, migrations.RunPython.noop)]
