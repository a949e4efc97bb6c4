"""Settings of the test project: the database and extra apps come from the environment.

DB_ENGINE (sqlite3 or postgresql), DB_NAME, DB_HOST, DB_PORT, DB_USER: the database.
EXTRA_APPS: comma-separated apps to add, "failapp" (a migration that raises) and/or
"slowapp" (a migration that sleeps two seconds).
"""
import os

SECRET_KEY = "django-migrate-tests-only"
DEBUG = False
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["shop"] + [app for app in os.environ.get("EXTRA_APPS", "").split(",") if app]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends." + os.environ.get("DB_ENGINE", "sqlite3"),
        "NAME": os.environ["DB_NAME"],
        "HOST": os.environ.get("DB_HOST", ""),
        "PORT": os.environ.get("DB_PORT", ""),
        "USER": os.environ.get("DB_USER", ""),
    }
}
