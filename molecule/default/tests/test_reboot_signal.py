"""A host whose installed updates wait for a reboot says so on every converge (the common role's
`REBOOT REQUIRED` message and its common_reboot_required fact, which the message depends on)."""

from stackhelpers import group_hosts, podman_hosts, recap, run_playbook, web_variable

testinfra_hosts = podman_hosts("webservers")[:1]

SIGNAL = "REBOOT REQUIRED: "


def converge_common_service():
    """The common role's service step, in check mode (it changes nothing either way)."""
    result = run_playbook("--check", "playbooks/base.yml", "--tags", "common_service")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert all(counts["changed"] == 0 for counts in recap(result.stdout).values()), result.stdout[-3000:]
    return " ".join(result.stdout.split())  # a long message may be folded over lines


def test_a_pending_reboot_is_reported_by_the_converge_and_only_then(host):
    assert not host.file("/run/reboot-required").exists, "the test server already waits for a reboot"
    assert SIGNAL not in converge_common_service()
    try:
        # What an update that needs a reboot (update-notifier-common's hook) leaves behind.
        host.check_output("echo '*** System restart required ***' > /run/reboot-required"
                          " && echo libc6 > /run/reboot-required.pkgs")
        output = converge_common_service()
    finally:
        host.run("rm -f /run/reboot-required /run/reboot-required.pkgs")
    assert SIGNAL + group_hosts("webservers")[0] + " " in output, output[-3000:]
    automatic = web_variable("common_unattended_upgrades_automatic_reboot", False)
    assert ("unattended-upgrades reboots it" if automatic else "Nothing reboots it automatically") in output, output[-3000:]
