"""The systemd user unit, as the desktop user, for an account whose name has a dash
(tado:holiday-home). systemd is not PID 1 on these machines, so the unit is never
started by systemd: `systemd-analyze verify` checks it, and the commands the test runs
are the ones systemd itself expands from it (a probe unit made of the unit's Exec lines,
whose expanded paths `verify` reports)."""

import json
import re
import subprocess

import pytest

from rig import ROOT, user_rig, user_system, wait_until  # noqa: F401

HOME_ID = "1001"
ACCOUNT = "tado:holiday-home"


def install_unit(user_rig, name):
    """Unit @name as `meson install --prefix=/usr` installs it, in a directory of the
    user's, with the man pages its Documentation= names: -> (unit file, MANPATH)."""
    text = (ROOT / f"contrib/{name}.in").read_text().replace("@bindir@", "/usr/bin")
    path = user_rig.home / f"units/{name}"
    user_rig.user.write(path, text)
    man = user_rig.home / "man"
    for page in ("smarthomefs.1", "mount.smarthomefs.8"):
        with open(ROOT / f"docs/{page}.scd", "rb") as src:
            roff = subprocess.run(["scdoc"], stdin=src, capture_output=True, check=True)
        user_rig.user.write(man / f"man{page[-1]}/{page}", roff.stdout)
    return path, man


@pytest.fixture
def unit(user_rig):
    """The template unit, one account a mount."""
    return install_unit(user_rig, "smarthomefs@.service")


@pytest.fixture
def all_unit(user_rig):
    """The unit of all accounts in one mount."""
    return install_unit(user_rig, "smarthomefs.service")


def verify(user_rig, unit_path, instance, manpath=None):
    """`systemd-analyze verify --user` of @unit_path loaded as @instance, as the user."""
    env = dict(user_rig.env, **({"MANPATH": str(manpath)} if manpath else {}))
    r = subprocess.run([*user_rig.prefix, "systemd-analyze", "verify", "--user",
                        f"{unit_path}:{instance}"], env=env, capture_output=True, text=True,
                       timeout=60)
    user_rig.outputs += [r.stdout, r.stderr]
    return r


def expanded_commands(user_rig, unit_path, instance):
    """{Exec key: [argv, ...]} as systemd expands them for @instance: each command
    line becomes the path of a missing program in a probe unit of its own (verify stops
    at the first), and verify names that path."""
    commands = {}
    probe = unit_path.with_name("probe@.service")
    for line in unit_path.read_text().splitlines():
        key, _, value = line.partition("=")
        if not key.startswith("Exec"):
            continue
        # The command's words joined by "|" under /nonexistent/@ (no "//" to fold).
        user_rig.user.write(probe, "[Service]\nExecStart=/nonexistent/@"
                            + "|".join(value.lstrip("-").split()) + "\n")
        err = verify(user_rig, probe, instance.replace("smarthomefs@", "probe@")).stderr
        found = re.search(r"Command /nonexistent/@(\S+) is not executable", err)
        assert found, err
        commands.setdefault(key, []).append(found[1].split("|"))
    return commands


def run_unit(user_rig, cmds, mnt, check):
    """Runs what systemd runs for a unit: ExecStartPre, ExecStart in the foreground until
    @mnt is mounted, @check(), then ExecStop, which must end the service with 0."""
    for cmd in cmds["ExecStartPre"]:
        subprocess.run([*user_rig.prefix, *cmd], env=user_rig.env, capture_output=True)
    log_path = user_rig.tmp / "unit.log"
    user_rig.logs.append(log_path)
    with open(log_path, "wb") as log:
        service = subprocess.Popen([*user_rig.prefix, *cmds["ExecStart"][0]],
                                   env=user_rig.env, stdout=log, stderr=log)
    try:
        wait_until(lambda: user_rig.is_mount(mnt) or service.poll() is not None, 20,
                   "the unit's mount")
        check()
        for cmd in cmds["ExecStop"]:
            r = subprocess.run([*user_rig.prefix, *cmd], env=user_rig.env,
                               capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
        assert service.wait(15) == 0
        assert not user_rig.is_mount(mnt)
    finally:
        if service.poll() is None:
            service.kill()
            service.wait(5)


def test_unit_passes_systemd_analyze_verify_for_an_account_with_a_dash(user_rig, unit):
    path, man = unit
    r = verify(user_rig, path, f"smarthomefs@{ACCOUNT}.service", man)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""


def test_systemd_passes_the_account_with_its_dash_and_the_unit_mounts_it(user_rig, unit):
    """What systemd runs for smarthomefs@tado:holiday-home: ExecStartPre, ExecStart (in
    the foreground), then ExecStop, as the user."""
    path, _ = unit
    user_rig.login_tado(ACCOUNT)
    user_rig.write_config(ACCOUNT)
    cmds = expanded_commands(user_rig, path, f"smarthomefs@{ACCOUNT}.service")
    mnt = user_rig.home / "home-data" / ACCOUNT
    assert cmds["ExecStart"] == [["/usr/bin/smarthomefs", "mount", ACCOUNT, str(mnt),
                                  "--foreground"]]

    def check():
        value = user_rig.read(mnt / f"homes/{HOME_ID}/zones/1/values/inside_temperature")
        assert re.fullmatch(r"-?\d+(\.\d+)?\n", value)

    run_unit(user_rig, cmds, mnt, check)


def test_a_usage_error_ends_the_unit_for_good(user_rig, unit):
    """A typo in the config file: ExecStart exits 2, which the unit's
    RestartPreventExitStatus= keeps from being retried every RestartSec."""
    path, _ = unit
    user_rig.login_tado(ACCOUNT)
    config = user_rig.write_config(ACCOUNT)
    user_rig.user.write(config, config.read_text() + "tll = 5\n")
    cmds = expanded_commands(user_rig, path, f"smarthomefs@{ACCOUNT}.service")
    for cmd in cmds["ExecStartPre"]:
        subprocess.run([*user_rig.prefix, *cmd], env=user_rig.env, capture_output=True)
    r = subprocess.run([*user_rig.prefix, *cmds["ExecStart"][0]], env=user_rig.env,
                       capture_output=True, text=True, timeout=60)
    user_rig.outputs += [r.stdout, r.stderr]
    assert r.returncode == 2, r.stderr
    assert "unknown key 'tll'" in r.stderr
    service = dict(line.split("=", 1) for line in path.read_text().splitlines()
                   if "=" in line and not line.startswith("#"))
    assert service["Restart"] == "on-failure"
    assert "2" in service["RestartPreventExitStatus"].split()


def test_the_unit_of_all_accounts_passes_systemd_analyze_verify(user_rig, all_unit):
    path, man = all_unit
    r = verify(user_rig, path, "smarthomefs.service", man)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""


def test_the_unit_of_all_accounts_mounts_both_logins_at_home_data(user_rig, all_unit):
    """Two tado logins (the second user invited to home 1001): the unit mounts both at
    ~/home-data, the shared home once; a third login while it runs joins the mount."""
    path, _ = all_unit
    user_rig.cloud.control.tado_invite(int(HOME_ID))
    user_rig.login_tado()
    user_rig.cloud.control.tado_login_as("second")
    user_rig.login_tado("tado:second")
    user_rig.write_accounts_config(["tado", "tado:second", "tado:third"])
    cmds = expanded_commands(user_rig, path, "smarthomefs.service")
    mnt = user_rig.home / "home-data"
    assert cmds["ExecStart"] == [["/usr/bin/smarthomefs", "mount", str(mnt), "--foreground"]]

    def check():
        assert user_rig.sh(f"ls {mnt}/homes").stdout == f"{HOME_ID}\n"
        value = user_rig.read(mnt / f"homes/{HOME_ID}/zones/1/values/inside_temperature")
        assert re.fullmatch(r"-?\d+(\.\d+)?\n", value)
        status = json.loads(user_rig.read(mnt / ".smarthomefs/status.json"))
        assert sorted(status["accounts"]) == ["tado", "tado:second"]
        assert status["homes"][HOME_ID] == {"account": "tado",
                                            "listed_by": ["tado", "tado:second"]}
        user_rig.login_tado("tado:third")
        wait_until(lambda: "tado:third" in json.loads(
            user_rig.read(mnt / ".smarthomefs/status.json"))["accounts"], 30,
            "the new login to join the mount")

    run_unit(user_rig, cmds, mnt, check)
