import shutil
import tempfile
import uuid
from datetime import timedelta

from django.core.cache import caches
from django.core.management import call_command
from django.test import TestCase, override_settings
from django.utils import timezone

from checks.models import Check, Ping

EXAMPLE_CODE = uuid.UUID("00000000-0000-4000-8000-000000000001")


class PingboardTestCase(TestCase):
    # The test runner creates the "db" cache table (createcachetable) with the test database.
    def setUp(self):
        caches["db"].clear()


class HomeTests(PingboardTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # The manifest storage needs a manifest: collect into a throwaway STATIC_ROOT.
        cls.static_root = tempfile.mkdtemp()
        cls.settings_override = override_settings(STATIC_ROOT=cls.static_root)
        cls.settings_override.enable()
        call_command("collectstatic", interactive=False, verbosity=0)

    @classmethod
    def tearDownClass(cls):
        cls.settings_override.disable()
        shutil.rmtree(cls.static_root)
        super().tearDownClass()

    def test_home_lists_checks_and_links_hashed_static_files(self):
        response = self.client.get("/", secure=True)
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "example")
        self.assertContains(response, "/ping/00000000-0000-4000-8000-000000000001/")
        self.assertContains(response, "pingboard version A")
        self.assertRegex(response.content.decode(), r'href="/static/css/pingboard\.[0-9a-f]{12}\.css"')
        self.assertRegex(response.content.decode(), r'src="/static/js/pingboard\.[0-9a-f]{12}\.js"')

    @override_settings(SECURE_SSL_REDIRECT=True)  # what DEBUG=false sets
    def test_home_redirects_plain_http_to_https(self):
        response = self.client.get("/")
        self.assertEqual(response.status_code, 301)
        self.assertTrue(response["Location"].startswith("https://"))


class PingTests(PingboardTestCase):
    def test_ping_records_and_answers_ok_over_plain_http(self):
        response = self.client.post(f"/ping/{EXAMPLE_CODE}/")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.content, b"OK")
        self.assertEqual(response["Content-Type"], "text/plain")
        check = Check.objects.get(code=EXAMPLE_CODE)
        self.assertEqual(check.status, Check.Status.UP)
        self.assertEqual(check.n_pings, 1)
        self.assertIsNotNone(check.last_ping)
        self.assertEqual(Ping.objects.filter(owner=check, method="POST").count(), 1)
        self.assertEqual(self.client.get(f"/ping/{EXAMPLE_CODE}/").status_code, 200)

    def test_unknown_code_is_404(self):
        self.assertEqual(self.client.get(f"/ping/{uuid.uuid4()}/").status_code, 404)

    @override_settings(PING_RATE_LIMIT=3)
    def test_rate_limit(self):
        for _ in range(3):
            self.assertEqual(self.client.get(f"/ping/{EXAMPLE_CODE}/").status_code, 200)
        self.assertEqual(self.client.get(f"/ping/{EXAMPLE_CODE}/").status_code, 429)
        self.assertEqual(Check.objects.get(code=EXAMPLE_CODE).n_pings, 3)


class HealthTests(PingboardTestCase):
    def test_health_ok(self):
        response = self.client.get("/health/", secure=True)
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.content, b"OK")
        self.assertEqual(response["Content-Type"], "text/plain")


class SendAlertsTests(PingboardTestCase):
    def test_once_marks_overdue_check_down(self):
        now = timezone.now()
        overdue = Check.objects.create(name="nightly", timeout=60, status="up", last_ping=now - timedelta(seconds=61))
        fresh = Check.objects.create(name="hourly", timeout=3600, status="up", last_ping=now - timedelta(seconds=61))
        with self.assertLogs("checks.sendalerts", level="INFO") as logs:
            call_command("sendalerts", once=True)
        overdue.refresh_from_db()
        fresh.refresh_from_db()
        self.assertEqual(overdue.status, Check.Status.DOWN)
        self.assertEqual(fresh.status, Check.Status.UP)
        self.assertEqual(Check.objects.get(code=EXAMPLE_CODE).status, Check.Status.NEW)
        self.assertRegex(logs.output[0], r"sendalerts: started pid=\d+ release=")
        self.assertEqual(sum("is down" in line for line in logs.output), 1)
        self.assertIn("nightly", logs.output[1])
