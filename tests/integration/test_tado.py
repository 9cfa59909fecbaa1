"""tado° end to end: device-code login into the keyring, a real FUSE mount of the
emulated cloud, what a user sees in it, and token refresh."""

import errno
import json
import os
import subprocess

import pytest

from rig import run_together, BIN, wait_until, read, stored_tokens

HOME = "1001"


def test_login_prints_the_link_with_client_id_and_stores_tokens_in_the_keyring(rig):
    r = rig.login_tado()

    assert "client_id=1bb50063-6b0c-4d11-bd99-387f4a91cc46" in r.stdout
    assert "user_code=" in r.stdout
    stored = stored_tokens(rig)
    assert stored["provider"] == "tado"
    assert stored["refresh_token"] in rig.cloud.control.tokens()["live_refresh_tokens"]


def login_answered_by(rig, answer):
    """Runs `smarthomefs login tado` while the user answers in the "browser" (@answer,
    called once the CLI is polling). Returns (exit code, stderr)."""
    rig.cloud.control.config(auto_approve=False, device_interval=0)
    cmd = [str(BIN), "login", "tado", "-o", ",".join(rig.options())]
    proc = subprocess.Popen(cmd, env=rig.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_until(lambda: rig.cloud.control.stats()["token_requests"].get("device_code"), 20,
                   "a first poll of the pending code")
        assert proc.poll() is None, "login must keep polling while the code is pending"
        answer()
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    rig.outputs += [out, err]
    return proc.returncode, err


def test_login_waits_for_approval_then_succeeds(rig):
    code, err = login_answered_by(rig, rig.cloud.control.approve)
    assert code == 0, err
    assert rig.cloud.control.stats()["token_requests"]["device_code"] >= 2
    assert stored_tokens(rig)["refresh_token"]


def test_denied_login_says_so_and_stores_nothing(rig):
    code, err = login_answered_by(rig, rig.cloud.control.deny)
    assert code == 1
    assert "denied" in err
    assert rig.keyring.lookup("tado") is None


def test_expired_device_code_ends_the_login_clearly(rig):
    rig.cloud.control.config(auto_approve=False, device_interval=0, device_expires_in=1)
    r = rig.run("login", "tado", check=False, timeout=60)
    assert r.returncode == 1
    assert "expired" in r.stderr
    assert rig.keyring.lookup("tado") is None


def test_login_without_a_secret_service_names_both_ways_out(rig):
    env = dict(rig.env)
    env["DBUS_SESSION_BUS_ADDRESS"] = "unix:path=" + str(rig.tmp / "no-bus")
    r = rig.run("login", "tado", check=False, env=env)
    assert r.returncode == 1
    assert "token_store=file" in r.stderr
    assert "Secret Service" in r.stderr
    assert rig.cloud.control.stats()["token_requests"].get("device_code", 0) == 0


def test_status_shows_the_account_and_never_a_token(rig):
    rig.login_tado()
    r = rig.run("status")
    assert "tado" in r.stdout and "keyring" in r.stdout
    j = json.loads(rig.run("status", "--json").stdout)
    assert j[0]["account"] == "tado" and j[0]["store"] == "keyring"
    assert j[0]["refresh_token"] is True


def test_logout_removes_the_tokens(rig):
    rig.login_tado()
    rig.run("logout", "tado")
    assert rig.keyring.lookup("tado") is None
    r = rig.run("logout", "tado", check=False)
    assert r.returncode == 1 and "no login" in r.stderr


def test_tree_shows_homes_zones_and_devices_as_the_cloud_has_them(rig):
    rig.login_tado()
    m = rig.mount()
    data = rig.cloud.control.data()["tado"]

    assert sorted(os.listdir(m / "homes")) == sorted(data["homes"])
    home = data["homes"][HOME]
    assert json.loads(read(m / f"homes/{HOME}/home.json")) == home["home"]
    assert json.loads(read(m / f"homes/{HOME}/state.json")) == home["state"]
    assert json.loads(read(m / f"homes/{HOME}/weather.json")) == home["weather"]
    zone_ids = sorted(str(z["id"]) for z in home["zones"])
    assert sorted(os.listdir(m / f"homes/{HOME}/zones")) == zone_ids
    for z in home["zones"]:
        zdir = m / f"homes/{HOME}/zones/{z['id']}"
        assert json.loads(read(zdir / "zone.json")) == z
        assert json.loads(read(zdir / "state.json")) == home["zoneStates"]["zoneStates"][str(z["id"])]
    serials = sorted(d["serialNo"] for d in home["devices"])
    assert sorted(os.listdir(m / f"homes/{HOME}/devices")) == serials
    for d in home["devices"]:
        assert json.loads(read(m / f"homes/{HOME}/devices/{d['serialNo']}/device.json")) == d


def test_json_files_are_pretty_printed_with_a_trailing_newline(rig):
    rig.login_tado()
    m = rig.mount()
    text = read(m / f"homes/{HOME}/home.json").decode()
    assert text.startswith("{\n  \"") and text.endswith("}\n")


def test_zone_values_are_scalars_with_a_newline(rig):
    rig.login_tado()
    m = rig.mount()
    state = rig.cloud.control.data()["tado"]["homes"][HOME]["zoneStates"]["zoneStates"]["1"]
    temp = read(m / f"homes/{HOME}/zones/1/values/inside_temperature").decode()
    assert temp == f"{state['sensorDataPoints']['insideTemperature']['celsius']}\n"
    hum = read(m / f"homes/{HOME}/zones/1/values/humidity").decode()
    assert float(hum) == state["sensorDataPoints"]["humidity"]["percentage"]


def test_every_file_stat_size_equals_the_bytes_read(rig):
    rig.login_tado()
    m = rig.mount()
    count = 0
    for dirpath, dirnames, filenames in os.walk(m.path):
        for name in filenames:
            p = os.path.join(dirpath, name)
            if ".smarthomefs" in p:
                continue
            assert os.stat(p).st_size == len(read(p)), p
            count += 1
    assert count > 10


def test_inode_numbers_are_unique_and_stable_across_remounts(rig):
    rig.login_tado()
    m = rig.mount()

    def inodes():
        seen = {}
        for dirpath, dirnames, filenames in os.walk(m.path):
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                seen[os.path.relpath(p, m.path)] = os.lstat(p).st_ino
        return seen

    first = inodes()
    assert len(set(first.values())) == len(first)
    m.stop()
    rig.mounts.remove(m)
    m2 = rig.mount()
    assert m2.path == m.path
    assert inodes() == first


def test_find_tar_and_cp_copy_the_mount_without_a_warning(rig, tmp_path):
    rig.login_tado()
    m = rig.mount()
    f = subprocess.run(["find", str(m.path), "-type", "f"], capture_output=True, text=True)
    assert f.returncode == 0 and f.stderr == ""
    assert len(f.stdout.splitlines()) > 10
    tarball = tmp_path / "copy.tar"
    t = subprocess.run(["tar", "cf", str(tarball), "-C", str(m.path), "."], capture_output=True,
                       text=True)
    assert t.returncode == 0 and t.stderr == ""
    listing = subprocess.run(["tar", "tvf", str(tarball)], capture_output=True, text=True).stdout
    assert " link to " not in listing  # duplicate inode numbers would make hard links
    dest = tmp_path / "copy"
    c = subprocess.run(["cp", "-r", str(m.path), str(dest)], capture_output=True, text=True)
    assert c.returncode == 0 and c.stderr == ""
    src = m / f"homes/{HOME}/zones/1/state.json"
    assert (dest / f"homes/{HOME}/zones/1/state.json").read_bytes() == read(src)


def test_twenty_reads_of_a_zone_state_within_the_ttl_make_one_api_call(rig):
    rig.login_tado()
    m = rig.mount(extra=["ttl=600"])
    rig.cloud.control.reset_stats()
    for _ in range(20):
        read(m / f"homes/{HOME}/zones/1/state.json")
        read(m / f"homes/{HOME}/zones/2/state.json")
    requests = rig.cloud.control.stats()["requests"]
    assert requests.get(f"GET /api/v2/homes/{HOME}/zoneStates") == 1
    assert not any("/zones/1/state" in k for k in requests)


def test_expired_access_token_is_refreshed_once_and_the_keyring_gets_the_new_one(rig):
    rig.login_tado()
    spent = stored_tokens(rig)["refresh_token"]
    m = rig.mount()
    read(m / f"homes/{HOME}/home.json")
    rig.cloud.control.expire_tokens()
    rig.cloud.control.reset_stats()

    # Resources not read before: each needs a call with a valid token.
    assert json.loads(read(m / f"homes/{HOME}/weather.json"))
    assert json.loads(read(m / f"homes/{HOME}/state.json"))

    stats = rig.cloud.control.stats()
    assert stats["token_requests"].get("refresh_token") == 1
    assert stats["refresh_reuse"] == 0
    live = rig.cloud.control.tokens()["live_refresh_tokens"]
    now = stored_tokens(rig)["refresh_token"]
    assert now != spent and now in live


def test_parallel_readers_after_expiry_share_one_refresh(rig):
    rig.login_tado()
    m = rig.mount(extra=["ttl=0"])
    read(m / f"homes/{HOME}/home.json")
    rig.cloud.control.expire_tokens()
    rig.cloud.control.reset_stats()
    errors = []

    def reader(i):
        try:
            read(m / f"homes/{HOME}/zones/{1 + i % 3}/state.json")
        except OSError as e:
            errors.append(e)

    run_together(reader, [(i,) for i in range(16)])
    assert errors == []
    stats = rig.cloud.control.stats()
    assert stats["token_requests"].get("refresh_token") == 1
    assert stats["refresh_reuse"] == 0


def test_writes_are_refused_with_erofs(rig):
    rig.login_tado()
    m = rig.mount()
    with pytest.raises(OSError) as e:
        open(m / f"homes/{HOME}/home.json", "w")
    assert e.value.errno == errno.EROFS
    with pytest.raises(OSError) as e:
        os.mkdir(m / "homes/new")
    assert e.value.errno == errno.EROFS


def test_status_json_in_the_mount_counts_calls_and_holds_no_token(rig):
    rig.login_tado()
    m = rig.mount()
    read(m / f"homes/{HOME}/home.json")
    status = json.loads(read(m / ".smarthomefs/status.json"))
    assert status["account"] == "tado" and status["provider"] == "tado"
    assert status["api_calls"] >= 2
    assert status["rate_limit"]["quota"] == 100
    assert status["token"]["store"] == "keyring"
    metrics = read(m / ".smarthomefs/metrics").decode()
    assert 'smarthomefs_api_calls_total{account="tado"}' in metrics
    text = json.dumps(status) + metrics
    for secret in rig.secrets_seen():
        assert secret not in text


def test_unmount_leaves_no_process_behind(rig):
    rig.login_tado()
    m = rig.mount()
    read(m / f"homes/{HOME}/home.json")
    subprocess.run(["fusermount3", "-u", str(m.path)], check=True)
    assert m.proc.wait(15) == 0
    assert not m.path.is_mount()


def test_daemonized_mount_reports_a_missing_login(rig, tmp_path):
    target = tmp_path / "mnt"
    target.mkdir()
    r = rig.run("mount", "tado", str(target), check=False)
    assert r.returncode == 1
    assert "smarthomefs login tado" in r.stderr
    assert not target.is_mount()


def test_daemonized_mount_reports_a_bad_mountpoint(rig, tmp_path):
    rig.login_tado()
    r = rig.run("mount", "tado", str(tmp_path / "missing"), check=False)
    assert r.returncode == 1
    assert "missing" in r.stderr


def test_daemonized_mount_runs_in_the_background_until_unmounted(rig, tmp_path):
    rig.login_tado()
    target = tmp_path / "bg"
    target.mkdir()
    rig.run("mount", "tado", str(target))
    try:
        assert target.is_mount()
        assert json.loads(read(target / f"homes/{HOME}/home.json"))["id"] == int(HOME)
    finally:
        subprocess.run(["fusermount3", "-u", str(target)])
    assert not target.is_mount()


# ---- A login that ends (issue 12, point 4) ----

DAY_S = 24 * 3600
# Not "tado": `status` reads every mount of the account by the same uid, and on a shared
# machine another run's root mount of "tado" may be one whose login has expired.
ACCOUNT = "tado:second"


def store_tokens(rig, tokens, account="tado"):
    """Replaces what the keyring holds for @account, as another process's save would."""
    subprocess.run(["secret-tool", "store", "--label", f"smarthomefs token for {account}",
                    "xdg:schema", "io.smarthomefs.Token", "provider", tokens["provider"],
                    "account", account],
                   input=json.dumps(tokens), text=True, env=rig.env, check=True, timeout=10)


def test_status_shows_when_an_unused_login_ends_and_warns_in_its_last_3_days(rig):
    rig.login_tado(ACCOUNT)
    tokens = stored_tokens(rig, ACCOUNT)
    issued = tokens["refresh_issued_at"]
    j = json.loads(rig.run("status", ACCOUNT, "--json").stdout)[0]
    # tado's refresh tokens live 30 days from their issue.
    assert j["login_expires_in_s"] > 30 * DAY_S - 120
    assert "login_expired" not in j
    r = rig.run("status", ACCOUNT)
    assert "login expires:" in r.stdout and "warning" not in r.stdout

    # The same login, last refreshed 28 days ago: two days left, said plainly.
    store_tokens(rig, {**tokens, "refresh_issued_at": issued - 28 * DAY_S}, ACCOUNT)
    r = rig.run("status", ACCOUNT)
    assert r.returncode == 0
    line = next(l for l in r.stdout.splitlines() if "login expires:" in l)
    assert "in 2 days" in line or "in 47 hours" in line, line
    assert "warning" in line and f"smarthomefs login {ACCOUNT}" in line

    # 31 days ago: over, and the exit status says so.
    store_tokens(rig, {**tokens, "refresh_issued_at": issued - 31 * DAY_S}, ACCOUNT)
    r = rig.run("status", ACCOUNT, check=False)
    assert r.returncode == 1
    assert "expired" in r.stdout and f"smarthomefs login {ACCOUNT}" in r.stderr
    r = rig.run("status", ACCOUNT, "--json", check=False)
    assert r.returncode == 1 and json.loads(r.stdout)[0]["login_expired"] is True
    rig.assert_no_secret_leaked()


def assert_the_login_ended_and_was_said_once(rig, m):
    """After one refused refresh: status.json and `smarthomefs status` say the login
    expired, and the mount's log said once which command to run."""
    status = json.loads(read(m / ".smarthomefs/status.json"))
    assert status["login"]["expired"] is True
    assert rig.cloud.control.stats()["token_requests"].get("refresh_token") == 1
    log = rig.logs[-1].read_text()
    said = [l for l in log.splitlines() if "has expired" in l]
    assert len(said) == 1 and f"smarthomefs login {ACCOUNT}" in said[0], log
    r = rig.run("status", ACCOUNT, check=False)
    assert r.returncode == 1
    assert "expired" in r.stdout and f"smarthomefs login {ACCOUNT}" in r.stderr


def test_a_refused_refresh_is_logged_once_with_the_command_and_status_fails(rig):
    rig.login_tado(ACCOUNT)
    m = rig.mount(ACCOUNT)
    read(m / f"homes/{HOME}/home.json")
    rig.cloud.control.revoke_refresh_tokens("tado")
    rig.cloud.control.expire_tokens()
    rig.cloud.control.reset_stats()

    for name in ("weather.json", "state.json", "weather.json"):
        with pytest.raises(OSError):
            read(m / f"homes/{HOME}/{name}")
    assert_the_login_ended_and_was_said_once(rig, m)

    # Logging in again brings the mount back without a remount.
    rig.login_tado(ACCOUNT)

    def reads_again():
        try:
            return bool(read(m / f"homes/{HOME}/weather.json"))
        except OSError:
            return False

    # After the refusal's 30 s hold-off, the next read finds the new login in the store.
    wait_until(reads_again, 60, "the mount to take the new login")
    assert json.loads(read(m / ".smarthomefs/status.json"))["login"]["expired"] is False
    assert rig.run("status", ACCOUNT).returncode == 0
    rig.assert_no_secret_leaked()


def test_a_refresh_token_outlived_by_31_days_ends_the_login_with_the_command(rig):
    """tado's refresh tokens die 30 days after issue (the emulator's clock moves 31 days):
    the mount refuses reads it cannot serve, says once which command to run, status.json
    and `smarthomefs status` say the login expired; cached files stay readable."""
    rig.login_tado(ACCOUNT)
    m = rig.mount(ACCOUNT)
    cached = read(m / f"homes/{HOME}/home.json")
    rig.cloud.control.advance_clock(31 * DAY_S)
    rig.cloud.control.reset_stats()

    # The stored access token has expired too: the next fetch needs the dead refresh token.
    rig.cloud.control.expire_tokens()
    with pytest.raises(OSError) as e:
        read(m / f"homes/{HOME}/weather.json")
    assert e.value.errno == errno.EACCES
    assert_the_login_ended_and_was_said_once(rig, m)
    assert read(m / f"homes/{HOME}/home.json") == cached
    rig.assert_no_secret_leaked()
