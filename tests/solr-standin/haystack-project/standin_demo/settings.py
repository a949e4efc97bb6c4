"""Settings of the haystack test project (SQLite; Solr through django-haystack's Solr backend and pysolr).

Environment: SOLR_BASE_URL (http://127.0.0.1:8983/solr), SOLR_CORE (haystack), STANDIN_DB (the SQLite
file), STANDIN_HAYSTACK_TEMPLATES=fixed (default: the Solr 9 templates of ../haystack-templates) or
upstream (haystack's own templates, which Solr 9 rejects), STANDIN_EXTRA_FIELD=1 (one more index field,
for the schema-change test).
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "solr-standin-tests-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["localhost"]
INSTALLED_APPS = ["django.contrib.contenttypes", "haystack", "notes"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("STANDIN_DB", "/tmp/solr-standin-demo.sqlite3"),
    }
}
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR.parent / "haystack-templates"]
        if os.environ.get("STANDIN_HAYSTACK_TEMPLATES", "fixed") == "fixed"
        else [],
        "APP_DIRS": True,
    }
]
_SOLR = os.environ.get("SOLR_BASE_URL", "http://127.0.0.1:8983/solr").rstrip("/")
HAYSTACK_CONNECTIONS = {
    "default": {
        "ENGINE": "haystack.backends.solr_backend.SolrEngine",
        "URL": f"{_SOLR}/{os.environ.get('SOLR_CORE', 'haystack')}",
        "ADMIN_URL": f"{_SOLR}/admin/cores",
        "TIMEOUT": 10,
    }
}
HAYSTACK_SIGNAL_PROCESSOR = "haystack.signals.RealtimeSignalProcessor"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
