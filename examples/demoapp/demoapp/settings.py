"""Settings for the demo project.

Every setting that differs between machines comes from an environment variable; the
deploy writes them into a systemd EnvironmentFile. README.md lists them. An empty
variable counts as unset, so an EnvironmentFile may leave optional ones blank.
"""

import logging
import os
import re
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from demoapp.version import VERSION

BASE_DIR = Path(__file__).resolve().parent.parent

_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, "").strip() or default


def env_bool(name: str, default: bool) -> bool:
    value = env_str(name).lower()
    if not value:
        return default
    if value not in _BOOLEANS:
        raise ImproperlyConfigured(f"{name} must be one of true/false/1/0/yes/no, not {value!r}.")
    return _BOOLEANS[value]


def env_int(name: str, default: int) -> int:
    value = env_str(name)
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}.") from None


def env_list(name: str) -> list[str]:
    return [item.strip() for item in env_str(name).split(",") if item.strip()]


SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is not set: put a random string of 50 or more characters "
        "in the environment (the deploy writes it into the app's EnvironmentFile)."
    )

DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "haystack",
    "notes.apps.NotesConfig",
    "jobs.apps.JobsConfig",
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

ROOT_URLCONF = "demoapp.urls"
WSGI_APPLICATION = "demoapp.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # templates/search_configuration: haystack's Solr schema templates, fixed for Solr 9.
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "notes.context_processors.version",
                "notes.context_processors.environment",
            ],
        },
    },
]

# Database: PostgreSQL in production, SQLite for the tests and local runs.
DB_ENGINE = env_str("DJANGO_DB_ENGINE", "postgresql")
if DB_ENGINE == "postgresql":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": env_str("DJANGO_DB_NAME", "demoapp"),
            "USER": env_str("DJANGO_DB_USER", "demoapp"),
            "PASSWORD": env_str("DJANGO_DB_PASSWORD"),
            "HOST": env_str("DJANGO_DB_HOST", "127.0.0.1"),
            "PORT": env_int("DJANGO_DB_PORT", 5432),
        }
    }
    # TLS to a database on another host: libpq's sslmode (verify-full checks the certificate
    # against the CA and the address) and the CA certificate. Unset: libpq's defaults.
    # DJANGO_DB_HOST may list several hosts (primary,replica,...): with target_session_attrs
    # read-write, libpq connects to the first that takes writes, so a promoted replica takes
    # over without a settings change.
    DATABASES["default"]["OPTIONS"] = {
        name: value for name, value in (("sslmode", env_str("DJANGO_DB_SSLMODE")),
                                        ("sslrootcert", env_str("DJANGO_DB_SSLROOTCERT")),
                                        ("target_session_attrs", env_str("DJANGO_DB_TARGET_SESSION_ATTRS"))) if value
    }
    # With a host list, a primary that is down without refusing (a dead server drops the packets)
    # must cost seconds, not the kernel's connect timeout, before libpq tries the next host.
    if "target_session_attrs" in DATABASES["default"]["OPTIONS"]:
        DATABASES["default"]["OPTIONS"]["connect_timeout"] = 5
    # A streaming replica for read-only work: the "replica" alias, which demoapp.routers sends
    # reads to inside demoapp.routers.replica_reads() only (a read right after a write elsewhere
    # must see it: the replica may lag). Its tests use the default database.
    if env_str("DJANGO_DB_REPLICA_HOST"):
        DATABASES["replica"] = {
            **{key: value for key, value in DATABASES["default"].items() if key != "OPTIONS"},
            "HOST": env_str("DJANGO_DB_REPLICA_HOST"),
            # A replica that drops the packets must not hang /healthz past the balancer's check
            # timeout: that would take every web server out for a replica the site can do without.
            "OPTIONS": {
                "connect_timeout": 2,
                **{name: value for name, value in (("sslmode", env_str("DJANGO_DB_REPLICA_SSLMODE")),
                                                   ("sslrootcert", env_str("DJANGO_DB_REPLICA_SSLROOTCERT"))) if value},
            },
            "TEST": {"MIRROR": "default"},
        }
elif DB_ENGINE == "sqlite":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env_str("DJANGO_DB_NAME", str(BASE_DIR / "db.sqlite3")),
        }
    }
else:
    raise ImproperlyConfigured(
        f"DJANGO_DB_ENGINE must be 'postgresql' or 'sqlite', not {DB_ENGINE!r}."
    )
for _database in DATABASES.values():
    _database["CONN_MAX_AGE"] = env_int("DJANGO_DB_CONN_MAX_AGE", 60)
    # Persistent connections are checked before reuse, so a database restart costs no request.
    _database["CONN_HEALTH_CHECKS"] = True
DATABASE_ROUTERS = ["demoapp.routers.ReplicaRouter"]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Cache: memcached when a location is given (host:port items, or unix:/path of a socket, which
# Django passes to pymemcache as it is), else a per-process memory cache.
CACHE_LOCATION = env_list("DJANGO_CACHE_LOCATION")
CACHE_KEY_PREFIX = env_str("DJANGO_CACHE_KEY_PREFIX", "demoapp")
if CACHE_LOCATION:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
            "LOCATION": CACHE_LOCATION,
            "KEY_PREFIX": CACHE_KEY_PREFIX,
            # A memcached outage turns into cache misses (pages still render from the
            # database) instead of errors; /healthz reports it as "cache": "error".
            "OPTIONS": {"connect_timeout": 1, "timeout": 1, "ignore_exc": True},
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "KEY_PREFIX": CACHE_KEY_PREFIX,
        }
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

# Static files and uploads; nginx serves both directories.
STATIC_URL = env_str("DJANGO_STATIC_URL", "/static/")
STATIC_ROOT = env_str("DJANGO_STATIC_ROOT", str(BASE_DIR / "static"))
MEDIA_URL = env_str("DJANGO_MEDIA_URL", "/media/")
MEDIA_ROOT = env_str("DJANGO_MEDIA_ROOT", str(BASE_DIR / "media"))
# For bench/appserver.py only: the app also serves STATIC_ROOT itself under this prefix (as a
# site without nginx in front would), to compare with nginx serving the same file. Off unless set.
BENCH_SERVE_STATIC_AT = env_str("DJANGO_BENCH_SERVE_STATIC_AT")
# A path that always fails (a 500 from an exception), to check after a deploy that errors reach
# the error reporting (Sentry): set it to an unguessable path, or leave it empty (no such path).
ERROR_PROBE_PATH = env_str("DJANGO_ERROR_PROBE_PATH")
# Uploads on an S3-compatible bucket when one is named: every web server and worker then sees
# every file (the local MEDIA_ROOT of one host cannot be shared). Browsers fetch them from the
# bucket through presigned URLs, or from DJANGO_MEDIA_S3_URL (a public or CDN base) when set.
MEDIA_S3_BUCKET = env_str("DJANGO_MEDIA_S3_BUCKET")
if MEDIA_S3_BUCKET:
    _MEDIA_S3_STYLE = env_str("DJANGO_MEDIA_S3_ADDRESSING_STYLE", "auto")
    if _MEDIA_S3_STYLE not in ("auto", "path", "virtual"):
        raise ImproperlyConfigured(
            f"DJANGO_MEDIA_S3_ADDRESSING_STYLE must be auto, path or virtual, not {_MEDIA_S3_STYLE!r}."
        )
    _MEDIA_S3_KEYS = (env_str("DJANGO_MEDIA_S3_ACCESS_KEY"), env_str("DJANGO_MEDIA_S3_SECRET_KEY"))
    if bool(_MEDIA_S3_KEYS[0]) != bool(_MEDIA_S3_KEYS[1]):
        raise ImproperlyConfigured(
            "DJANGO_MEDIA_S3_ACCESS_KEY and DJANGO_MEDIA_S3_SECRET_KEY go together: set both, or "
            "neither (boto3's default chain, an instance role for example)."
        )
    _MEDIA_S3_URL = env_str("DJANGO_MEDIA_S3_URL")
    DEFAULT_STORAGE = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": MEDIA_S3_BUCKET,
            "endpoint_url": env_str("DJANGO_MEDIA_S3_ENDPOINT_URL") or None,
            "region_name": env_str("DJANGO_MEDIA_S3_REGION") or None,
            "addressing_style": None if _MEDIA_S3_STYLE == "auto" else _MEDIA_S3_STYLE,
            "access_key": _MEDIA_S3_KEYS[0] or None,
            "secret_key": _MEDIA_S3_KEYS[1] or None,
            "signature_version": "s3v4",
            # Private objects, presigned URLs: the bucket needs no public policy.
            "default_acl": None,
            "querystring_auth": not _MEDIA_S3_URL,
            "querystring_expire": env_int("DJANGO_MEDIA_S3_URL_EXPIRE", 3600),
            # Two uploads of the same name keep both files, as on disk.
            "file_overwrite": False,
        },
    }
    if _MEDIA_S3_URL:
        # storages takes a domain (and path) without the scheme, and serves it over HTTPS.
        if not _MEDIA_S3_URL.startswith("https://"):
            raise ImproperlyConfigured(f"DJANGO_MEDIA_S3_URL must start with https://, not {_MEDIA_S3_URL!r}.")
        DEFAULT_STORAGE["OPTIONS"]["custom_domain"] = _MEDIA_S3_URL.removeprefix("https://").rstrip("/")
        MEDIA_URL = _MEDIA_S3_URL.rstrip("/") + "/"
else:
    DEFAULT_STORAGE = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
STORAGES = {
    "default": DEFAULT_STORAGE,
    # ManifestStaticFilesStorage with one manifest per release (see demoapp/staticfiles.py).
    "staticfiles": {"BACKEND": "demoapp.staticfiles.ReleaseManifestStaticFilesStorage"},
}
# Readable by nginx, whatever the app's umask.
FILE_UPLOAD_PERMISSIONS = 0o644
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o755

# HTTPS is terminated by nginx, which sets X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
USE_X_FORWARDED_HOST = False
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
# The health check is requested over plain HTTP on the app socket.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", True)
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
X_FRAME_OPTIONS = "DENY"

# Logs go to stderr, where journald picks them up (it adds the timestamp).
LOG_LEVEL = env_str("DJANGO_LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in logging.getLevelNamesMapping():
    raise ImproperlyConfigured(
        f"DJANGO_LOG_LEVEL must be a logging level such as INFO, not {LOG_LEVEL!r}."
    )
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["stderr"], "level": LOG_LEVEL},
    # Drop Django's own handlers (console only in DEBUG, mail_admins) and use the root's.
    "loggers": {"django": {"handlers": [], "level": LOG_LEVEL, "propagate": True}},
}

# Search: django-haystack on the Solr core DJANGO_SOLR_URL names; without one (unit tests,
# runserver) haystack's simple backend searches the database. Saving or deleting a note updates
# the index at once. An indexing error is logged, not raised: a Solr outage must not break
# saving a note (deploys run `update_index` with DJANGO_HAYSTACK_SILENTLY_FAIL=false instead).
SOLR_URL = env_str("DJANGO_SOLR_URL")
if SOLR_URL:
    HAYSTACK_CONNECTIONS = {
        "default": {
            "ENGINE": "haystack.backends.solr_backend.SolrEngine",
            "URL": SOLR_URL,
            "ADMIN_URL": SOLR_URL.rstrip("/").rsplit("/", 1)[0] + "/admin/cores",
            "TIMEOUT": 10,
            "SILENTLY_FAIL": env_bool("DJANGO_HAYSTACK_SILENTLY_FAIL", True),
        }
    }
else:
    HAYSTACK_CONNECTIONS = {"default": {"ENGINE": "haystack.backends.simple_backend.SimpleEngine"}}
HAYSTACK_SIGNAL_PROCESSOR = "haystack.signals.RealtimeSignalProcessor"

# Celery (demoapp/celery.py reads the CELERY_* settings). Without a broker URL (unit tests,
# runserver) tasks run in the calling process instead of being queued.
CELERY_BROKER_URL = env_str("DJANGO_CELERY_BROKER_URL")
# AMQP over TLS (an amqps:// URL): the broker's certificate must be signed by this CA and name
# the address the URL connects to.
CELERY_BROKER_CA_FILE = env_str("DJANGO_CELERY_BROKER_CA_FILE")
if CELERY_BROKER_CA_FILE:
    import ssl
    from urllib.parse import urlsplit

    CELERY_BROKER_USE_SSL = {
        "ca_certs": CELERY_BROKER_CA_FILE,
        "cert_reqs": ssl.CERT_REQUIRED,
        "server_hostname": urlsplit(CELERY_BROKER_URL).hostname,
    }
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Results live in the models the tasks write (jobs.models), not in a result backend.
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULE = {
    "heartbeat": {
        "task": "jobs.tasks.heartbeat",
        "schedule": env_int("DJANGO_CELERY_HEARTBEAT_SECONDS", 60),
    },
}

# A non-production environment (staging, ...): every page names it in a banner, so that nobody
# mistakes the site for the live one. Empty in production: no banner. It reaches the HTML and
# the deploy's EnvironmentFile, hence a short identifier only.
ENVIRONMENT_NAME = env_str("DJANGO_ENVIRONMENT_NAME")
if ENVIRONMENT_NAME and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,29}", ENVIRONMENT_NAME):
    raise ImproperlyConfigured(
        "DJANGO_ENVIRONMENT_NAME must be a letter then up to 29 letters, digits, - or _, "
        f"not {ENVIRONMENT_NAME!r}."
    )

# Outgoing email: SMTP by default; a staging site sends it to a sink instead (the console
# backend writes each message to stdout, which journald keeps), so no real person gets mail
# from test data.
EMAIL_BACKEND = env_str("DJANGO_EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")

# The release this process runs: the deploy's release directory (releases/<UTC time>-<content id>),
# as the django_app role names it; elsewhere (a checkout, the tests) the code's VERSION.
RELEASE_ID = BASE_DIR.name if BASE_DIR.parent.name == "releases" else f"demoapp@{VERSION}"

# Unhandled exceptions of views and tasks go to Sentry, tagged with the release and the
# environment (demoapp/observability.py); sentry_sdk is only imported when SENTRY_DSN is set.
SENTRY_DSN = env_str("SENTRY_DSN")
if SENTRY_DSN:
    from demoapp.observability import MIDDLEWARE as SENTRY_MIDDLEWARE
    from demoapp.observability import init_sentry

    MIDDLEWARE.insert(0, SENTRY_MIDDLEWARE)
    init_sentry(SENTRY_DSN, release=RELEASE_ID, environment=ENVIRONMENT_NAME or "production")
