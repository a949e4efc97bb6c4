from django.db import migrations


def seed(apps, schema_editor):
    apps.get_model("shop", "Item").objects.using(schema_editor.connection.alias).create(name="seed", price=1)


class Migration(migrations.Migration):
    dependencies = [("shop", "0002_item_price")]
    operations = [migrations.RunPython(seed)]  # no reverse_code: irreversible
