"""`--check --diff` on the converged host reports no change (a tested contract)."""

from stackhelpers import recap, run_playbook


def test_check_diff_on_converged_host_reports_no_change():
    result = run_playbook("--check", "--diff", "site.yml")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    hosts = recap(result.stdout)
    changed = {name: counts["changed"] for name, counts in hosts.items() if counts["changed"] != 0}
    assert changed == {}, result.stdout[-6000:]
    # The run really covered the stack: every tier's tasks ran in check mode.
    assert all(counts["ok"] > 40 for counts in hosts.values()), hosts
