"""
Django settings for pingboard.

Everything that differs between installations comes from environment variables;
README.md lists them.
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name, default):
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value not in ("true", "false"):
        raise ImproperlyConfigured(f'{name} must be "true" or "false", not {value!r}.')
    return value == "true"


def parse_cache_url(url):
    """Turn CACHE_URL into a Django CACHES entry.

    locmem://                               per-process memory (the default)
    pymemcache://host:port,host:port        memcached over TCP (port defaults to 11211)
    pymemcache:///run/memcached/x.sock      memcached over a Unix socket (no host: the form
                                            django-environ and django-cache-url read)
    pymemcache://unix:/run/memcached/x.sock the same, as Django's LOCATION spells it
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ImproperlyConfigured(f"CACHE_URL {url!r} has no scheme (locmem:// or pymemcache://).")
    if scheme == "locmem":
        return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": rest or "pingboard"}
    if scheme == "pymemcache":
        if rest.startswith("/"):
            return {"BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache", "LOCATION": ["unix:" + rest]}
        servers = []
        for server in rest.split(","):
            server = server.strip()
            if not server:
                continue
            if server.startswith("unix:"):
                if not server[len("unix:") :].startswith("/"):
                    raise ImproperlyConfigured(f"CACHE_URL: {server!r} is not unix:/absolute/path.")
            elif ":" not in server:
                server += ":11211"
            servers.append(server)
        if not servers:
            raise ImproperlyConfigured(f"CACHE_URL {url!r} names no memcached server.")
        return {"BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache", "LOCATION": servers}
    raise ImproperlyConfigured(f"CACHE_URL scheme {scheme!r} is not supported (locmem or pymemcache).")


SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    raise ImproperlyConfigured("The SECRET_KEY environment variable is required.")

DEBUG = env_bool("DEBUG", False)

ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "").split(",") if h.strip()]

SITE_ROOT = os.environ.get("SITE_ROOT", "").strip().rstrip("/") or "http://localhost:8000"
CSRF_TRUSTED_ORIGINS = [SITE_ROOT]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "checks",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "pingboard.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "pingboard.wsgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", "").strip() or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=60,
        conn_health_checks=True,
    )
}

CACHES = {
    "default": parse_cache_url(os.environ.get("CACHE_URL", "").strip() or "locmem://"),
    # Per-check ping rate limiting; the table comes from `manage.py createcachetable`.
    "db": {
        "BACKEND": "django.core.cache.backends.db.DatabaseCache",
        "LOCATION": "pingboard_cache",
    },
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = os.environ.get("STATIC_ROOT", "").strip() or BASE_DIR / "static-collected"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# At most this many pings per check and minute; more answer 429.
PING_RATE_LIMIT = 30

# Behind a TLS-terminating proxy that sets X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = not DEBUG
# Pings come from cron jobs and scripts, often over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^ping/"]
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
try:
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "").strip() or 0)
except ValueError:
    raise ImproperlyConfigured("SECURE_HSTS_SECONDS must be an integer.") from None
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "root": {"handlers": ["stderr"], "level": "INFO"},
}
