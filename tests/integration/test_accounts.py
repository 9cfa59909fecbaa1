"""One mount for all the accounts logged in (`smarthomefs mount DIR`, no ACCOUNT): a tado
and a Tibber account side by side under homes/, one account's failure (its cloud down,
its login ended) leaving the other's homes alone, a home two tado users share shown once,
and logins and logouts while mounted."""

import errno
import json
import os
import re
import subprocess

import pytest

from rig import BIN, ROOT, read, read_error, wait_until

TADO_HOME = "1001"
TIBBER_HOME1 = "92b82b1f-0196-56ab-bd6e-3588c700d94b"
TIBBER_HOME2 = "3a67085e-c93a-508e-a265-aa2ac38615cd"
CHARGER = "ZWFzZWUgZW5vZGUgY2hhcmdlcjoxMDA"
TADO_VALUE = f"homes/{TADO_HOME}/zones/1/values/inside_temperature"
TIBBER_DEVICE = f"homes/{TIBBER_HOME1}/devices/{CHARGER}/device.json"
NUMBER = re.compile(r"-?\d+(\.\d+)?\n")
EXPIRING = "tado:expiring"


@pytest.fixture
def cloud_options():
    # A quota this large never stretches a TTL (tado's 100 a day would: ttl=0 fetches).
    return {"tado_homes": 2, "quota": 10_000_000}


def status(m):
    return json.loads(read(m / ".smarthomefs/status.json"))


def homes(m):
    return sorted(os.listdir(m / "homes"))


def test_a_tado_and_a_tibber_account_share_one_mount(rig):
    rig.login_tado()
    rig.login_tibber()
    m = rig.mount_all(["tado", "tibber"])

    assert homes(m) == sorted(["1001", "1002", TIBBER_HOME1, TIBBER_HOME2])
    assert NUMBER.fullmatch(read(m / TADO_VALUE).decode())
    assert json.loads(read(m / TIBBER_DEVICE))["id"] == CHARGER
    assert sorted(os.listdir(m.path)) == ["homes"]  # .smarthomefs is reachable, not listed

    st = status(m)
    assert sorted(st["accounts"]) == ["tado", "tibber"]
    assert st["accounts"]["tado"]["provider"] == "tado"
    assert st["accounts"]["tibber"]["api_calls"] > 0
    assert st["homes"][TADO_HOME] == {"account": "tado", "listed_by": ["tado"]}
    assert st["homes"][TIBBER_HOME2] == {"account": "tibber", "listed_by": ["tibber"]}

    # One HELP and TYPE per metric, one sample per account (Prometheus' text format).
    metrics = read(m / ".smarthomefs/metrics").decode()
    helps = [l for l in metrics.splitlines() if l.startswith("# HELP")]
    assert len(helps) == len(set(helps))
    calls = [l for l in metrics.splitlines() if l.startswith("smarthomefs_api_calls_total{")]
    assert sorted(l.split("}")[0] for l in calls) == [
        'smarthomefs_api_calls_total{account="tado"', 'smarthomefs_api_calls_total{account="tibber"']

    # The mount's source is "all"; `smarthomefs status` finds it for each account.
    assert m.path.is_mount()
    out = rig.run("status", options=False).stdout
    assert out.count(f"mounted at:    {m.path}") == 2, out


def test_one_accounts_cloud_down_then_its_login_ended_leave_the_others_homes_alone(rig):
    """tado's API answers 503 (its cloud down), then its login ends (refresh refused):
    its homes stay listed, cached copies are served while the cloud is down, EIO then
    EACCES say why for the rest, status.json says which account; Tibber, which refreshes
    its own token meanwhile, keeps working all along."""
    # A label of its own: `smarthomefs status` reads every root mount of an account on
    # the machine, and other runs' tests must not find this one's ended login.
    rig.login_tado(EXPIRING)
    rig.login_tibber()
    # ttl=0: every tado read goes to its cloud, so what a reader gets is what it answers.
    m = rig.mount_all([EXPIRING, "tibber"], extra={EXPIRING: ["ttl=0"]})
    assert TADO_HOME in homes(m)
    value = read(m / TADO_VALUE)
    tibber_before = read(m / TIBBER_DEVICE)

    rig.cloud.control.fail("503", 100000, "/api/v2/")
    rig.cloud.control.fail("503", 100000, "/oauth2/")
    # The cached copy, stale, is served; what was never read says EIO.
    assert read(m / TADO_VALUE) == value
    assert read_error(m / f"homes/{TADO_HOME}/weather.json")[0] == errno.EIO
    assert homes(m) == sorted(["1001", "1002", TIBBER_HOME1, TIBBER_HOME2])
    st = status(m)
    assert st["accounts"][EXPIRING]["last_stale"] is not None
    assert st["accounts"]["tibber"]["last_stale"] is None
    assert read(m / TIBBER_DEVICE) == tibber_before
    assert read(m / f"homes/{TIBBER_HOME2}/home.json")

    # The cloud is back, but the login has ended (and every access token expired).
    rig.cloud.control.clear_faults()
    rig.cloud.control.revoke_refresh_tokens("tado")
    rig.cloud.control.expire_tokens()
    assert read_error(m / f"homes/{TADO_HOME}/state.json")[0] == errno.EACCES
    assert homes(m) == sorted(["1001", "1002", TIBBER_HOME1, TIBBER_HOME2])
    st = status(m)
    assert st["accounts"][EXPIRING]["login"]["expired"] is True
    assert st["accounts"]["tibber"]["login"]["expired"] is False
    assert st["homes"][TADO_HOME]["account"] == EXPIRING
    # Tibber refreshes its expired token for what it has not fetched yet, and reads on.
    assert json.loads(read(m / f"homes/{TIBBER_HOME2}/home.json"))["id"] == TIBBER_HOME2
    assert os.listdir(m / f"homes/{TIBBER_HOME2}/devices")
    assert status(m)["accounts"]["tibber"]["token"]["refreshes"] == 1

    r = rig.run("status", options=False, check=False)
    assert r.returncode == 1
    assert f"the login of {EXPIRING} has expired" in r.stderr
    assert "tibber" not in r.stderr


def test_one_accounts_spent_quota_leaves_the_other_reading(rig):
    """tado's daily quota is spent (every call answers 429): what tado has not fetched
    says EAGAIN and status.json says until when; Tibber reads on, homes/ shows both."""
    rig.login_tado()
    rig.login_tibber()
    m = rig.mount_all(["tado", "tibber"])
    assert homes(m) == sorted(["1001", "1002", TIBBER_HOME1, TIBBER_HOME2])
    rig.cloud.control.config(quota=0)

    assert read_error(m / f"homes/{TADO_HOME}/weather.json")[0] == errno.EAGAIN
    assert read(m / TIBBER_DEVICE)
    assert os.listdir(m / f"homes/{TIBBER_HOME2}/devices")
    assert homes(m) == sorted(["1001", "1002", TIBBER_HOME1, TIBBER_HOME2])
    st = status(m)
    assert st["accounts"]["tado"]["rate_limit"]["blocked_until"] is not None
    assert st["accounts"]["tibber"]["rate_limit"]["blocked_until"] is None


def test_a_home_two_tado_users_share_is_shown_once_and_served_by_one_account(rig):
    """The second tado user was invited to home 1001: logged in as tado and tado:second,
    the home is listed once, served by "tado" (the first by name), and status.json names
    both. When tado is logged out while mounted, tado:second serves it, 1002 (tado's
    alone) leaves the mount, and tado's tokens are not used again."""
    rig.cloud.control.tado_invite(1001)
    rig.login_tado()
    rig.cloud.control.tado_login_as("second")
    rig.login_tado("tado:second")
    m = rig.mount_all(["tado", "tado:second"])

    assert homes(m) == ["1001", "1002"]
    first = read(m / f"homes/{TADO_HOME}/home.json")
    st = status(m)
    assert st["homes"][TADO_HOME] == {"account": "tado", "listed_by": ["tado", "tado:second"]}
    assert st["homes"]["1002"] == {"account": "tado", "listed_by": ["tado"]}

    rig.run("logout", "tado", options=False)
    wait_until(lambda: homes(m) == ["1001"], 30, "tado's own home to leave the mount")
    st = status(m)
    assert sorted(st["accounts"]) == ["tado:second"]
    assert st["homes"][TADO_HOME] == {"account": "tado:second", "listed_by": ["tado:second"]}
    assert read_error(m / "homes/1002/home.json")[0] == errno.ENOENT

    rig.cloud.control.reset_stats()
    rig.cloud.control.expire_tokens()
    assert read(m / f"homes/{TADO_HOME}/state.json")
    assert read(m / f"homes/{TADO_HOME}/home.json") == first
    users = rig.cloud.control.stats()["tado_api_by_user"]
    assert set(users) == {"second"}, users


def test_an_account_logged_in_while_mounted_joins_the_mount(rig):
    rig.login_tado()
    m = rig.mount_all(["tado", "tibber"])
    assert homes(m) == ["1001", "1002"]
    assert sorted(status(m)["accounts"]) == ["tado"]

    rig.login_tibber()
    wait_until(lambda: TIBBER_HOME1 in homes(m), 30, "the Tibber homes to appear")
    assert json.loads(read(m / TIBBER_DEVICE))["id"] == CHARGER
    assert sorted(status(m)["accounts"]) == ["tado", "tibber"]


def readme_jq_filter():
    """The README's jq filter that reads status.json of both shapes."""
    line = next(l for l in (ROOT / "README.md").read_text().splitlines()
                if l.startswith("$ jq '.accounts //"))
    return line.split("'")[1]


def logins_ended(m):
    r = subprocess.run(["jq", "-c", readme_jq_filter(), str(m / ".smarthomefs/status.json")],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def test_naming_an_account_still_mounts_it_alone_and_the_readmes_jq_reads_both_shapes(rig):
    rig.login_tado()
    rig.login_tibber()
    m = rig.mount("tado")
    assert homes(m) == ["1001", "1002"]
    assert status(m)["account"] == "tado"  # the one-account shape
    assert logins_ended(m) == {"tado": False}
    every = rig.mount_all(["tado", "tibber"], name="all-data")
    assert logins_ended(every) == {"tado": False, "tibber": False}


def test_no_account_logged_in_fails_the_mount_of_all_with_the_command(rig, tmp_path):
    rig.write_accounts_config(["tado"])
    r = rig.run("mount", str(tmp_path), "-f", options=False, check=False)
    assert r.returncode == 1
    assert "no account is logged in" in r.stderr and "smarthomefs login" in r.stderr


def test_tado_history_is_filled_in_a_mount_of_all_accounts(rig):
    rig.login_tado()
    rig.login_tibber()
    m = rig.mount_all(["tado", "tibber"], extra={"tado": ["history_days=2"]})
    hist = m / f"homes/{TADO_HOME}/zones/1/history"
    os.listdir(hist)
    # yesterday and today, each a .json and a .csv, fetched by the fill once each
    wait_until(lambda: len(os.listdir(hist)) == 4, 30, "the tado account's history")
    reports = rig.cloud.control.stats()["day_reports"]
    assert {k for k in reports if k.startswith(f"{TADO_HOME}/1/")} and set(reports.values()) == {1}
    assert all(json.loads(read(hist / n)) for n in os.listdir(hist) if n.endswith(".json"))


def test_a_config_typo_in_the_only_accounts_section_fails_the_mount_of_all_with_2(rig, tmp_path):
    """smarthomefs.service stops retrying on exit status 2: a typo is not mended by a retry."""
    rig.login_tado()
    path = rig.write_accounts_config(["tado"], {"tado": ["tll=120"]})
    r = rig.run("mount", str(tmp_path), "-f", options=False, check=False)
    assert r.returncode == 2, r.stderr
    assert f"{path}:" in r.stderr and "unknown key 'tll' in [tado]" in r.stderr
    assert not os.path.ismount(tmp_path)


def test_mount_helper_fake_run_of_all_checks_every_section(rig, tmp_path):
    """mount -f of an fstab line `all ...` reads the sections the real mount would."""
    helper = tmp_path / "mount.smarthomefs"
    helper.symlink_to(BIN)
    mnt = tmp_path / "home-data"
    mnt.mkdir()
    rig.write_accounts_config(["tado", "tibber"])
    r = subprocess.run([str(helper), "all", str(mnt), "-f"], env=rig.env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    path = rig.write_accounts_config(["tado", "tibber"], {"tibber": ["timeout=0"]})
    r = subprocess.run([str(helper), "all", str(mnt), "-f"], env=rig.env,
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert f"{path}:" in r.stderr
    assert "key 'timeout': timeout takes a whole number from 1 to 600" in r.stderr
    assert not os.path.ismount(mnt)


def test_the_config_error_of_every_account_is_said_once(rig, tmp_path):
    """When no account can be served, the mount fails saying each account's reason once."""
    rig.login_tado()
    rig.login_tibber()
    path = rig.write_accounts_config(["tado", "tibber"],
                                     {"tado": ["tll=120"], "tibber": ["timeout=0"]})
    r = rig.run("mount", str(tmp_path), options=False, check=False)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("unknown key 'tll' in [tado]") == 1, r.stderr
    assert r.stderr.count("timeout takes a whole number from 1 to 600") == 1, r.stderr
    assert r.stderr.count(f"{path}:") == 2, r.stderr
    assert not os.path.ismount(tmp_path)


def test_a_logout_while_a_refresh_waits_for_its_answer_stays_a_logout(rig):
    """`smarthomefs logout` lands while the mount's refresh request is at the login server:
    the tokens that answer brings are not stored again (the login stays removed), the
    account leaves the mount, and none of its tokens is sent again."""
    rig.login_tado()
    m = rig.mount_all(["tado"], extra={"tado": ["ttl=0"]})  # every read asks the cloud
    assert homes(m) == [TADO_HOME, "1002"]

    def refreshes():
        return rig.cloud.control.stats()["token_requests_by_cloud"]["tado"].get(
            "refresh_token", 0)

    before = refreshes()
    rig.cloud.control.expire_tokens()  # the next API call answers 401: a refresh follows
    rig.cloud.control.latency(3000)  # and each answer takes 3 s: time to log out meanwhile
    reader = subprocess.Popen(["cat", str(m / f"homes/{TADO_HOME}/state.json")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: refreshes() > before, 30, "the refresh request at the cloud")
        rig.run("logout", "tado", options=False)
        reader.wait(timeout=60)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    rig.cloud.control.latency(0)

    r = rig.run("logout", "tado", options=False, check=False)
    assert r.returncode == 1 and "no login is stored for 'tado'" in r.stderr, r.stderr
    wait_until(lambda: homes(m) == [], 30, "tado's homes to leave the mount")
    rig.cloud.control.reset_stats()
    assert read_error(m / f"homes/{TADO_HOME}/state.json")[0] == errno.ENOENT
    stats = rig.cloud.control.stats()
    assert not stats["tado_api_by_user"] and not any(stats["token_requests"].values()), stats
