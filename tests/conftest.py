"""Shared fixtures: the project root, a throwaway PostgreSQL cluster, moto's S3 server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The newest PostgreSQL major installed (the controller's release packages one: 15 on Debian 12, 17 on 13).
PG_BIN = max(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
             default=Path("/usr/lib/postgresql/15/bin"))


def missing_prerequisite(reason: str) -> None:
    """A test whose prerequisite is missing fails: `make test` installs them all
    (scripts/bootstrap.sh), so a missing one is a broken set-up, not a reason to pass. With
    DJSTACK_ALLOW_SKIP=1 (a developer's machine without them) it skips instead, and says why."""
    if os.environ.get("DJSTACK_ALLOW_SKIP") == "1":
        pytest.skip(reason)
    pytest.fail(f"missing prerequisite: {reason} (set DJSTACK_ALLOW_SKIP=1 to skip such tests)", pytrace=False)


# This machine's facts, gathered once per test process and reused by each ansible-playbook run of
# it (gathering is most of a short run's time; the roles see the same facts either way). One cache
# per process (pytest-xdist runs several): never two writers of one file.
FACT_CACHE = Path(tempfile.gettempdir()) / f"django-stack-test-facts-{os.getpid()}"


def fact_cache_env() -> dict[str, str]:
    return {"ANSIBLE_GATHERING": "smart", "ANSIBLE_CACHE_PLUGIN": "jsonfile",
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(FACT_CACHE), "ANSIBLE_CACHE_PLUGIN_TIMEOUT": "3600"}


@pytest.fixture(scope="session", autouse=True)
def _remove_the_fact_cache():
    yield
    shutil.rmtree(FACT_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 30) -> None:
    """A TCP connect, not a request: moto's IAM mode counts requests."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s")


# --- PostgreSQL --------------------------------------------------------------------------------

@dataclass
class PgCluster:
    """host: the socket directory (libpq's host=); port: the TCP port on 127.0.0.1 and the socket's number.
    Local (socket) connections are trusted; TCP ones need a password (scram-sha-256)."""

    host: str
    port: int
    bin: Path

    def connect(self, dbname: str = "postgres", user: str = "postgres", **kwargs):
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=user, dbname=dbname, autocommit=True, **kwargs)


@pytest.fixture(scope="session")
def pg_cluster():
    """A PostgreSQL cluster (the controller release's major) on a unix socket in a temp dir and on 127.0.0.1 (a free port); removed at the end."""
    if not (PG_BIN / "initdb").exists():
        missing_prerequisite(f"{PG_BIN}/initdb is absent: install postgresql (scripts/bootstrap.sh does)")
    if os.geteuid() != 0:
        missing_prerequisite("the throwaway PostgreSQL cluster is started as the postgres user with runuser, which needs root")
    base = Path(tempfile.mkdtemp(prefix="djtest-pg-"))
    shutil.chown(base, "postgres", "postgres")
    base.chmod(0o755)
    data = base / "data"
    port = free_port()

    def as_postgres(*cmd):
        subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True, text=True)

    try:
        as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "--auth-local=trust", "--auth-host=scram-sha-256",
                    "-U", "postgres", "--no-sync", "-E", "UTF8")
        as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "-t", "30",
                    "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off -c full_page_writes=off",
                    "start")
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"cannot start the test PostgreSQL cluster: {exc.stderr}")
    try:
        yield PgCluster(str(base), port, PG_BIN)
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "-w", "stop"], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)


# --- S3 (moto in server mode) --------------------------------------------------------------------

MOTO_SERVER = Path(sys.executable).parent / "moto_server"


@dataclass
class MotoServer:
    endpoint: str
    port: int
    proc: subprocess.Popen


def start_moto(env_extra: dict | None = None) -> MotoServer:
    if not MOTO_SERVER.exists():
        missing_prerequisite(f"{MOTO_SERVER} is absent: pip install -r requirements-test.txt (scripts/bootstrap.sh does)")
    port = free_port()
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_DEFAULT_REGION="us-east-1", **(env_extra or {}))
    proc = subprocess.Popen([str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port(port, proc, "moto_server")
    except RuntimeError as exc:
        proc.kill()
        pytest.fail(str(exc))
    return MotoServer(f"http://127.0.0.1:{port}", port, proc)


def stop_moto(server: MotoServer) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(10)


@pytest.fixture(scope="session")
def moto_s3():
    """moto's S3 server on 127.0.0.1 (any credentials are accepted); stopped at the end."""
    server = start_moto()
    try:
        yield server
    finally:
        stop_moto(server)


# --- the backup role's modules and command (test_django_backup.py, test_backup_*.py, backup_support.py) -----

@pytest.fixture(scope="session")
def backup_host_tools():
    """Debian's python3-boto3 and python3-psycopg2, age and tar: the tests that use it fail without them."""
    from backup_support import check_host_tools

    check_host_tools()


@pytest.fixture(scope="session")
def owner_role(pg_cluster):
    """The app's database role: owns the test databases, logs in over TCP with a password."""
    from backup_support import OWNER, OWNER_PASSWORD

    with pg_cluster.connect() as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [OWNER]).fetchone():
            conn.execute(f"CREATE ROLE {OWNER} LOGIN CREATEDB PASSWORD '{OWNER_PASSWORD}'")
    return OWNER


@pytest.fixture(scope="session")
def installed_backup(tmp_path_factory, backup_host_tools):
    """The server's django-stack-backup command and package, installed by the backup role's own install
    tasks into a temp dir (once per session)."""
    from backup_support import install_backup_command

    return install_backup_command(tmp_path_factory.mktemp("installed-backup"))


@pytest.fixture
def env(request, tmp_path, pg_cluster, moto_s3, owner_role, installed_backup):
    """One database, media directory and bucket for the test, named after it."""
    import hashlib

    from backup_support import Env

    name = "bk_" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:12]
    return Env(tmp_path, pg_cluster, moto_s3, name, installed_backup.command)


# --- pytest markers (registered here: the project has no pytest.ini) -------------------------------

def pytest_configure(config):
    config.addinivalue_line("markers", "container: needs rootful podman and the local test image "
                                       "(localhost/djstack-debian:bookworm, `make image`)")
