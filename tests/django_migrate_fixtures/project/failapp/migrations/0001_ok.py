from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("shop", "0003_seed")]
    operations = [migrations.RunPython(migrations.RunPython.noop, migrations.RunPython.noop)]
