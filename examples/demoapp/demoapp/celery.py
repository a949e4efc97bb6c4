"""The project's Celery app: settings from Django's (CELERY_*), tasks from the installed apps.

Workers run ``celery --app demoapp worker``; beat runs ``celery --app demoapp beat``.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demoapp.settings")

app = Celery("demoapp")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
