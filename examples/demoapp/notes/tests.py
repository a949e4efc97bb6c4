import json
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db.utils import OperationalError
from django.test import TestCase, override_settings
from django.urls import reverse

from demoapp.routers import ReplicaRouter, replica_reads
from demoapp.version import VERSION
from notes.forms import MAX_UPLOAD_SIZE, UploadForm
from notes.models import Counter, Note, Upload

RELEASE = Path(__file__).resolve().parent.parent.name  # the project directory's name

# The pages render {% static %}; the manifest only exists after collectstatic (tested below).
PLAIN_STATIC = {
    **settings.STORAGES,
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}


def run_manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run manage.py in a fresh process with only the given DJANGO_* variables."""
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith("DJANGO_") and k != "SENTRY_DSN"
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@override_settings(STORAGES=PLAIN_STATIC, SECURE_SSL_REDIRECT=False)
class PageTestCase(TestCase):
    def setUp(self) -> None:
        # The cache outlives the per-test database rollback.
        cache.clear()
        self.addCleanup(cache.clear)


class HomeTests(PageTestCase):
    def test_lists_notes_and_serves_the_second_request_from_the_cache(self) -> None:
        Note.objects.create(title="First", body="one")
        Note.objects.create(title="Second", body="two")

        response = self.client.get("/")
        self.assertContains(response, "First")
        self.assertContains(response, "Second")
        self.assertContains(response, f"demoapp version {VERSION}")
        self.assertContains(response, "notes/site.css")
        self.assertContains(response, "notes/logo.png")

        with self.assertNumQueries(0):
            again = self.client.get("/")
        self.assertContains(again, "Second")

    def test_saving_a_note_clears_the_cached_list(self) -> None:
        self.assertContains(self.client.get("/"), "No notes yet")
        with self.captureOnCommitCallbacks(execute=True):
            Note.objects.create(title="Fresh")
        self.assertContains(self.client.get("/"), "Fresh")

    def test_deleting_a_note_clears_the_cached_list(self) -> None:
        note = Note.objects.create(title="Doomed")
        self.assertContains(self.client.get("/"), "Doomed")
        with self.captureOnCommitCallbacks(execute=True):
            note.delete()
        self.assertNotContains(self.client.get("/"), "Doomed")


class NoteCreateTests(PageTestCase):
    def test_get_shows_the_form(self) -> None:
        response = self.client.get(reverse("notes:note_create"))
        self.assertContains(response, 'name="title"')
        self.assertContains(response, 'name="body"')

    def test_post_creates_a_note_and_redirects_home(self) -> None:
        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.post("/notes/new/", {"title": "Hello", "body": "World"})
        self.assertRedirects(response, "/")
        self.assertTrue(Note.objects.filter(title="Hello", body="World").exists())
        self.assertContains(self.client.get("/"), "Hello")

    def test_post_without_a_title_shows_the_error(self) -> None:
        response = self.client.post("/notes/new/", {"title": "", "body": "x"})
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "This field is required.")
        self.assertFalse(Note.objects.exists())


class CounterTests(PageTestCase):
    def test_each_get_increments_the_single_row(self) -> None:
        self.assertContains(self.client.get("/counter/"), '<span id="count">1</span>', html=True)
        self.assertContains(self.client.get("/counter/"), '<span id="count">2</span>', html=True)
        self.assertEqual(self.client.get("/counter/?format=json").json(), {"count": 3})
        self.assertEqual(Counter.objects.get().value, 3)

    def test_is_never_cached(self) -> None:
        self.assertIn("no-store", self.client.get("/counter/")["Cache-Control"])


class UploadTests(PageTestCase):
    def setUp(self) -> None:
        super().setUp()
        media_root = self.enterContext(tempfile.TemporaryDirectory())
        self.enterContext(override_settings(MEDIA_ROOT=media_root))
        self.media_root = Path(media_root)

    def test_post_saves_the_file_and_lists_it(self) -> None:
        upload = SimpleUploadedFile("hello.txt", b"hello world", content_type="text/plain")
        response = self.client.post("/uploads/", {"file": upload})
        self.assertRedirects(response, "/uploads/")

        saved = Upload.objects.get()
        path = self.media_root / saved.file.name
        self.assertEqual(path.read_bytes(), b"hello world")
        self.assertEqual(path.stat().st_mode & 0o777, 0o644)

        listing = self.client.get("/uploads/")
        self.assertContains(listing, f'href="{settings.MEDIA_URL}{saved.file.name}"')
        self.assertContains(listing, 'enctype="multipart/form-data"')

    def test_post_without_a_file_shows_the_error(self) -> None:
        response = self.client.post("/uploads/", {})
        self.assertContains(response, "This field is required.")
        self.assertFalse(Upload.objects.exists())

    def test_files_over_10_mb_are_refused(self) -> None:
        too_big = SimpleUploadedFile("big.bin", b"\0" * (MAX_UPLOAD_SIZE + 1))
        form = UploadForm(files={"file": too_big})
        self.assertFalse(form.is_valid())
        self.assertIn("the limit is 10 MB", form.errors["file"][0])


class HealthzTests(PageTestCase):
    def test_ok(self) -> None:
        response = self.client.get("/healthz")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), {"database": "ok", "cache": "ok", "version": VERSION, "release": RELEASE})
        self.assertIn("no-store", response["Cache-Control"])

    def test_503_when_the_cache_is_broken(self) -> None:
        with (
            mock.patch("notes.views.cache") as broken_cache,
            self.assertLogs(level="ERROR") as logs,
        ):
            broken_cache.set.side_effect = ConnectionRefusedError("memcached is down")
            response = self.client.get("/healthz")
        self.assertEqual(response.status_code, 503)
        self.assertEqual(
            json.loads(response.content), {"database": "ok", "cache": "error", "version": VERSION, "release": RELEASE}
        )
        self.assertIn("memcached is down", "\n".join(logs.output))

    def test_503_when_the_cache_loses_the_value(self) -> None:
        # What memcached with ignore_exc does when the server is unreachable.
        with mock.patch("notes.views.cache") as silent_cache, self.assertLogs(level="ERROR"):
            silent_cache.get.return_value = None
            response = self.client.get("/healthz")
        self.assertEqual(response.status_code, 503)
        self.assertEqual(response.json()["cache"], "error")

    def test_503_when_the_database_is_down(self) -> None:
        with (
            mock.patch("notes.views.connection.cursor", side_effect=OperationalError("no server")),
            self.assertLogs(level="ERROR"),
        ):
            response = self.client.get("/healthz")
        self.assertEqual(response.status_code, 503)
        self.assertEqual(response.json(), {"database": "error", "cache": "ok", "version": VERSION, "release": RELEASE})

    @override_settings(SECURE_SSL_REDIRECT=True)
    def test_plain_http_is_not_redirected(self) -> None:
        self.assertEqual(self.client.get("/healthz").status_code, 200)
        self.assertRedirects(
            self.client.get("/"),
            "https://testserver/",
            status_code=301,
            fetch_redirect_response=False,
        )


    def test_the_replica_is_reported_and_never_fails_the_check(self) -> None:
        with (
            mock.patch.dict(settings.DATABASES, {"replica": {"ATOMIC_REQUESTS": False}}),
            mock.patch("notes.views._replica_lag", return_value=None),
        ):
            response = self.client.get("/healthz")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json()["replica"], "error")
        with (
            mock.patch.dict(settings.DATABASES, {"replica": {"ATOMIC_REQUESTS": False}}),
            mock.patch("notes.views._replica_lag", return_value=0.25),
        ):
            body = self.client.get("/healthz").json()
        self.assertEqual((body["replica"], body["replica_lag_seconds"]), ("ok", 0.25))


class ReplicaTests(PageTestCase):
    def test_reads_go_to_the_replica_only_inside_replica_reads(self) -> None:
        router = ReplicaRouter()
        with mock.patch.dict(settings.DATABASES, {"replica": {}}):
            self.assertIsNone(router.db_for_read(Note))
            with replica_reads():
                self.assertEqual(router.db_for_read(Note), "replica")
                self.assertEqual(router.db_for_write(Note), "default")
            self.assertIsNone(router.db_for_read(Note))
        with replica_reads():
            self.assertIsNone(router.db_for_read(Note))  # no replica configured
        self.assertFalse(router.allow_migrate("replica", "notes"))
        self.assertTrue(router.allow_migrate("default", "notes"))

    def test_stats_counts_the_rows_on_the_default_database_without_a_replica(self) -> None:
        Note.objects.create(title="one", body="")
        self.client.get("/counter/")
        self.assertEqual(
            self.client.get("/stats/").json(), {"notes": 1, "uploads": 0, "counter": 1, "database": "default"}
        )

    def test_the_replica_alias_and_the_host_list_come_from_the_environment(self) -> None:
        script = (
            "import json; from django.conf import settings as s; d = s.DATABASES;"
            "print(json.dumps([d['default']['HOST'], d['default']['OPTIONS'], d['replica']['HOST'], d['replica']['OPTIONS']]))"
        )
        result = run_manage(
            "shell", "-c", script,
            DJANGO_SECRET_KEY="x" * 50, DJANGO_DB_HOST="10.0.0.10,10.0.0.11", DJANGO_DB_SSLMODE="verify-full",
            DJANGO_DB_TARGET_SESSION_ATTRS="read-write", DJANGO_DB_REPLICA_HOST="10.0.0.11",
            DJANGO_DB_REPLICA_SSLMODE="verify-full", DJANGO_DB_REPLICA_SSLROOTCERT="/etc/ssl/ca.crt",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(json.loads(result.stdout.splitlines()[-1]), [
            "10.0.0.10,10.0.0.11", {"sslmode": "verify-full", "target_session_attrs": "read-write", "connect_timeout": 5},
            "10.0.0.11", {"connect_timeout": 2, "sslmode": "verify-full", "sslrootcert": "/etc/ssl/ca.crt"},
        ])


class AdminTests(PageTestCase):
    def test_note_and_upload_are_registered(self) -> None:
        self.client.force_login(User.objects.create_superuser("admin", "admin@example.com", "pw"))
        response = self.client.get("/admin/")
        self.assertContains(response, reverse("admin:notes_note_changelist"))
        self.assertContains(response, reverse("admin:notes_upload_changelist"))


class StaticFilesTests(TestCase):
    def test_collectstatic_builds_the_manifest(self) -> None:
        with (
            tempfile.TemporaryDirectory() as static_root,
            override_settings(STATIC_ROOT=static_root),
        ):
            call_command("collectstatic", interactive=False, verbosity=0)
            manifests = [p.name for p in Path(static_root).glob("staticfiles*.json")]
            manifest = json.loads((Path(static_root) / f"staticfiles-{RELEASE}.json").read_text())
        self.assertEqual(manifests, [f"staticfiles-{RELEASE}.json"])  # one manifest, this release's
        self.assertIn("notes/site.css", manifest["paths"])
        self.assertIn("notes/logo.png", manifest["paths"])


class SettingsTests(TestCase):
    def test_check_deploy_is_clean_with_production_settings(self) -> None:
        result = run_manage(
            "check",
            "--deploy",
            "--fail-level",
            "WARNING",
            DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
            DJANGO_ALLOWED_HOSTS="demo.example.com",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("System check identified no issues", result.stdout)

    def test_missing_secret_key_is_refused(self) -> None:
        result = run_manage("check")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("ImproperlyConfigured: DJANGO_SECRET_KEY is not set", result.stderr)

    def test_bad_media_bucket_settings_are_refused(self) -> None:
        base = dict(DJANGO_SECRET_KEY="x" * 50, DJANGO_DB_ENGINE="sqlite", DJANGO_MEDIA_S3_BUCKET="media")
        for extra, message in (
            ({"DJANGO_MEDIA_S3_ACCESS_KEY": "AKID"}, "DJANGO_MEDIA_S3_ACCESS_KEY and DJANGO_MEDIA_S3_SECRET_KEY go"),
            ({"DJANGO_MEDIA_S3_ADDRESSING_STYLE": "dns"}, "DJANGO_MEDIA_S3_ADDRESSING_STYLE must be"),
            ({"DJANGO_MEDIA_S3_URL": "http://cdn.example.com"}, "DJANGO_MEDIA_S3_URL must start with https://"),
        ):
            with self.subTest(extra):
                result = run_manage("check", **base, **extra)
                self.assertNotEqual(result.returncode, 0)
                self.assertIn(f"ImproperlyConfigured: {message}", result.stderr)


@override_settings(STORAGES=PLAIN_STATIC, SECURE_SSL_REDIRECT=False)
class EnvironmentTests(TestCase):
    """A non-production environment (DJANGO_ENVIRONMENT_NAME, DJANGO_EMAIL_BACKEND)."""

    def setUp(self) -> None:
        admin = User.objects.create_superuser("admin", "admin@example.com", "unit-tests-only")
        self.client.force_login(admin)

    def test_production_shows_no_banner(self) -> None:
        for path in ("/", "/counter/", "/admin/"):
            self.assertNotContains(self.client.get(path), "environment-banner")

    @override_settings(ENVIRONMENT_NAME="staging")
    def test_every_page_names_the_environment(self) -> None:
        for path in ("/", "/counter/", "/uploads/", "/notes/new/", "/search/", "/admin/"):
            response = self.client.get(path)
            self.assertContains(response, 'id="environment-banner"', msg_prefix=path)
            self.assertContains(response, "<strong>staging</strong> environment", msg_prefix=path)

    def test_the_environment_name_must_be_an_identifier(self) -> None:
        result = run_manage("check", DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
                            DJANGO_ENVIRONMENT_NAME="<b>staging</b>")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("ImproperlyConfigured: DJANGO_ENVIRONMENT_NAME must be", result.stderr)

    def test_email_goes_to_smtp_by_default_and_to_the_console_when_told(self) -> None:
        default = run_manage("shell", "-c", "from django.conf import settings; print(settings.EMAIL_BACKEND)",
                             DJANGO_SECRET_KEY=secrets.token_urlsafe(50), DJANGO_DB_ENGINE="sqlite")
        self.assertEqual(default.stdout.splitlines()[-1], "django.core.mail.backends.smtp.EmailBackend")
        # The sink: sendtestemail's message is written to stdout instead of being sent.
        result = run_manage("sendtestemail", "someone@example.com",
                            DJANGO_SECRET_KEY=secrets.token_urlsafe(50), DJANGO_DB_ENGINE="sqlite",
                            DJANGO_EMAIL_BACKEND="django.core.mail.backends.console.EmailBackend")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("To: someone@example.com", result.stdout)
        self.assertIn("Subject: Test email from", result.stdout)


@override_settings(STORAGES=PLAIN_STATIC, SECURE_SSL_REDIRECT=False)
class SearchTests(TestCase):
    """The search page (haystack's simple backend here; Solr on a server)."""

    def test_finds_notes_by_their_words(self) -> None:
        Note.objects.create(title="Harbour report", body="The tide came in at noon.")
        Note.objects.create(title="Kitchen", body="Bread and butter.")
        response = self.client.get("/search/", {"q": "tide"})
        self.assertContains(response, "Harbour report")
        self.assertNotContains(response, "Kitchen")
        self.assertContains(response, "1 result for")

    def test_an_empty_query_shows_the_form_only(self) -> None:
        response = self.client.get("/search/")
        self.assertContains(response, 'name="q"')
        self.assertNotContains(response, "result")

    def test_the_solr_schema_builds_for_solr_9(self) -> None:
        """build_solr_schema renders the project's fixed templates: no class Solr 9 removed."""
        with tempfile.TemporaryDirectory() as conf:
            result = run_manage("build_solr_schema", "--configure-directory", conf,
                                DJANGO_SECRET_KEY=secrets.token_urlsafe(50), DJANGO_DB_ENGINE="sqlite",
                                DJANGO_SOLR_URL="http://127.0.0.1:9/solr/x")
            self.assertEqual(result.returncode, 0, result.stderr)
            schema = (Path(conf) / "schema.xml").read_text()
        self.assertIn('<field name="title"', schema)
        removed = [name for name in ('class="solr.LatLonType"', 'class="solr.Trie') if name in schema]
        self.assertEqual(removed, [], "classes Solr 9 does not load")
