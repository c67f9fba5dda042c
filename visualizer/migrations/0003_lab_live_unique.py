from django.db import migrations, models

LIVE = ["queued", "starting", "running"]


def stop_all_but_newest_live(apps, schema_editor):
    """Rows from before the constraints: a session (or a network) with several live labs keeps
    only its newest live one; the older ones were orphans no worker was running any more."""
    Lab = apps.get_model("visualizer", "Lab")
    for field in ("session_key", "network"):
        seen = set()
        for lab in Lab.objects.filter(state__in=LIVE).order_by("-created"):
            value = getattr(lab, field)
            if value in seen:
                Lab.objects.filter(pk=lab.pk).update(state="stopped")
            seen.add(value)


class Migration(migrations.Migration):

    dependencies = [
        ('lessons', '0004_lesson_edited_in_browser'),
        ('visualizer', '0002_progress'),
    ]

    operations = [
        migrations.RunPython(stop_all_but_newest_live, migrations.RunPython.noop),
        migrations.AddField(
            model_name='lab',
            name='client_address',
            field=models.GenericIPAddressField(blank=True, null=True),
        ),
        migrations.AddConstraint(
            model_name='lab',
            constraint=models.UniqueConstraint(condition=models.Q(('state__in', ['queued', 'starting', 'running'])), fields=('session_key',), name='one_live_lab_per_session'),
        ),
        migrations.AddConstraint(
            model_name='lab',
            constraint=models.UniqueConstraint(condition=models.Q(('state__in', ['queued', 'starting', 'running'])), fields=('network',), name='one_live_lab_per_network'),
        ),
    ]
