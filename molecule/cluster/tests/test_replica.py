"""The streaming replica on the worker (the dbreplicas group) follows the primary on db: what is
written on the primary is read on the replica within a bounded time, over TLS through its slot;
the app's read-only page reads it, the health page reports its lag; a dropped slot is recreated
by a converge, which restarts a replica that was down, and it catches up. The promotion: test_promotion.py, last.
"""

from __future__ import annotations

import json
import secrets
import time

import testinfra

from stackhelpers import APP_NAME, curl, group_hosts, recap, run_playbook

BASE = "https://localhost"
DB, = group_hosts("dbservers")
REPLICA, = group_hosts("dbreplicas")
WEB = group_hosts("webservers")
SLOT = REPLICA.replace("-", "_")
# How long a row may take to reach the replica on this idle test network.
REPLICATION_BOUND = 5.0


def server(name: str):
    return testinfra.get_host(f"podman://{name}")


def psql(name: str, sql: str, database: str = APP_NAME) -> str:
    return server(name).check_output(f"runuser -u postgres -- psql -XAt -d {database} -c \"{sql}\"")


def wait_for_row(name: str, title: str, bound: float) -> float:
    started = time.monotonic()
    while psql(name, f"SELECT count(*) FROM notes_note WHERE title = '{title}'") != "1":
        assert time.monotonic() - started < bound, f"{title} not on {name} after {bound} s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_the_replica_is_a_hot_standby_streaming_over_tls_through_its_slot():
    assert psql(REPLICA, "SELECT pg_is_in_recovery()") == "t"
    row = psql(DB, "SELECT r.state, s.ssl, r.application_name FROM pg_stat_replication r "
                   "JOIN pg_stat_ssl s USING (pid)").split("|")
    assert row == ["streaming", "t", SLOT], row
    assert psql(DB, f"SELECT active FROM pg_replication_slots WHERE slot_name = '{SLOT}'", "postgres") == "t"
    # The replica takes no write, even from the superuser.
    write = server(REPLICA).run(f"runuser -u postgres -- psql -XAt -d {APP_NAME} -c \"CREATE TABLE t (i int)\"")
    assert write.rc != 0 and "read-only transaction" in write.stderr, write.stderr


def test_a_row_written_on_the_primary_is_read_on_the_replica_within_the_bound():
    title = f"replicated-{secrets.token_hex(4)}"
    psql(DB, f"INSERT INTO notes_note (title, body, created) VALUES ('{title}', '', now())")
    took = wait_for_row(REPLICA, title, REPLICATION_BOUND)
    print(f"\nrow on the replica after {took * 1000:.0f} ms")


def test_the_apps_read_only_page_reads_the_replica_and_its_health_page_reports_the_lag():
    web = server(WEB[0])
    stats = json.loads(curl(web, f"{BASE}/stats/", "-k").stdout)
    assert stats["database"] == "replica" and stats["notes"] >= 1, stats
    health = json.loads(curl(web, f"{BASE}/healthz", "-k").stdout)
    assert health["replica"] == "ok" and 0 <= health["replica_lag_seconds"] < REPLICATION_BOUND, health


def test_a_replica_down_whose_slot_was_dropped_streams_again_after_a_converge():
    """The slot gone while the replica was down (dropped by hand, or invalidated past
    max_slot_wal_keep_size): the primary's converge makes it again, the replica's starts it, and
    it catches up (the WAL it needs is still there)."""
    replica = server(REPLICA)
    unit = replica.check_output("systemctl list-units --all --plain --no-legend 'postgresql@*-main.service'").split()[0]
    replica.check_output(f"systemctl stop {unit}")
    psql(DB, f"SELECT pg_drop_replication_slot('{SLOT}')", "postgres")
    title = f"after-the-slot-{secrets.token_hex(4)}"
    psql(DB, f"INSERT INTO notes_note (title, body, created) VALUES ('{title}', '', now())")
    result = run_playbook("playbooks/dbservers.yml", "playbooks/dbreplicas.yml")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    counts = recap(result.stdout)
    assert counts[DB]["changed"] >= 1 and counts[REPLICA]["changed"] >= 1, counts
    wait_for_row(REPLICA, title, 30)
    assert psql(DB, f"SELECT active FROM pg_replication_slots WHERE slot_name = '{SLOT}'", "postgres") == "t"
