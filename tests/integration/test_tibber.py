"""Tibber end to end: the authorization-code + PKCE login driven by a real headless
Chromium against the emulated cloud, its failures, then a real FUSE mount of the Data
API (homes, devices, values), its call counts and token refresh."""

import json
import os
import select
import socket
import subprocess
import urllib.parse

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from rig import BIN, TIBBER_CLIENT_ID, TIBBER_CLIENT_SECRET, follow_redirect, wait_until, read, stored_tokens

HOME1 = "92b82b1f-0196-56ab-bd6e-3588c700d94b"
HOME2 = "3a67085e-c93a-508e-a265-aa2ac38615cd"
SHARED_VEHICLE = "dm9sa3N3YWdlbiBlbm9kZSB2ZWhpY2xlOjEyMw"  # under both homes
CHARGER = "ZWFzZWUgZW5vZGUgY2hhcmdlcjoxMDA"
BATTERY = "c29ubmVuIGVub2RlIGJhdHRlcnk6MTAx"
THERMOSTAT = "bmV0YXRtbyBlbm9kZSB0aGVybW9zdGF0OjEwMg"

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"]


def stored(rig, account="tibber"):
    return stored_tokens(rig, account)


def version():
    out = subprocess.run([str(BIN), "--version"], capture_output=True, text=True,
                         check=True).stdout
    return out.split()[-1]


# ---- the browser: the user, trusting the test CA through its own NSS database

@pytest.fixture
def browser(tmp_path, cloud):
    """Headless Chromium under chromedriver, with a fresh profile and a HOME whose NSS
    database trusts the emulated cloud's CA (and nothing else of ours)."""
    home = tmp_path / "browser-home"
    nssdb = home / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    for args in (["-N", "--empty-password"],
                 ["-A", "-t", "C,,", "-n", "smarthomefs test CA", "-i", cloud.cafile]):
        subprocess.run(["certutil", "-d", f"sql:{nssdb}", *args], check=True,
                       capture_output=True)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={home / 'profile'}"]:
        options.add_argument(flag)
    env = dict(os.environ, HOME=str(home))
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS"):
        env.pop(var, None)
    service = Service("/usr/bin/chromedriver", env=env,
                      log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def page_text(driver):
    """The text of the page shown; "" while the browser is between two pages."""
    try:
        return driver.find_element(By.TAG_NAME, "body").text
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def click(driver, element_id):
    driver.find_element(By.ID, element_id).click()


def test_browser_login_stores_tokens_client_id_and_secret_in_the_keyring(rig, browser):
    login = rig.start_login_tibber()
    query = login.query()
    assert query["code_challenge_method"] == "S256"
    assert query["redirect_uri"].startswith("http://127.0.0.1:")
    scopes = query["scope"].split()
    for scope in ("openid", "offline_access", "data-api-user-read", "data-api-homes-read",
                  "data-api-vehicles-read", "data-api-meters-read"):
        assert scope in scopes

    browser.get(login.url)
    assert "Authorize access" in page_text(browser), "the consent page over trusted TLS"
    click(browser, "allow")
    wait_until(lambda: "Logged in" in page_text(browser), 20, "our success page")
    assert browser.current_url.startswith(query["redirect_uri"])
    code, out, err = login.finish()

    assert code == 0, err
    assert "Logged in to Tibber" in out
    tokens = stored(rig)
    assert tokens["provider"] == "tibber"
    assert tokens["client_id"] == TIBBER_CLIENT_ID
    assert tokens["client_secret"] == TIBBER_CLIENT_SECRET
    assert tokens["refresh_token"] in rig.cloud.control.tokens()["live_refresh_tokens"]
    assert tokens["access_token"] in rig.cloud.control.tokens()["access_tokens"]
    assert rig.cloud.control.stats()["token_requests"]["authorization_code"] == 1
    assert TIBBER_CLIENT_SECRET not in out + err


def test_denied_consent_in_the_browser_says_so_and_stores_nothing(rig, browser):
    login = rig.start_login_tibber()
    browser.get(login.url)
    click(browser, "deny")
    wait_until(lambda: "Login failed" in browser.title, 20, "our failure page")
    code, out, err = login.finish()

    assert code == 1
    assert "Tibber refused the login" in err and "denied" in err
    assert rig.keyring.lookup("tibber") is None
    assert rig.cloud.control.stats()["token_requests"].get("authorization_code", 0) == 0


def test_every_login_has_a_fresh_verifier_and_state(rig):
    first, second = rig.start_login_tibber("--timeout", "1"), rig.start_login_tibber(
        "--timeout", "1")
    a, b = first.query(), second.query()
    first.finish()
    second.finish()
    assert a["code_challenge"] != b["code_challenge"]
    assert a["state"] != b["state"]
    assert a["redirect_uri"] != b["redirect_uri"], "two ephemeral ports"


def test_an_answer_with_another_state_is_answered_ignored_and_the_login_goes_on(rig):
    login = rig.start_login_tibber()
    location = rig.cloud.control.tibber_consent(login.url, "allow")
    split = urllib.parse.urlsplit(location)
    query = dict(urllib.parse.parse_qsl(split.query))
    assert query["state"] == login.query()["state"]
    forged = {**query, "state": "not-the-state-we-sent"}
    status, page = follow_redirect(split._replace(query=urllib.parse.urlencode(forged))
                                   .geturl())
    assert status == 400 and "does not belong to the login" in page
    # The code that came with a forged answer is never redeemed, and the login waits on.
    assert rig.cloud.control.stats()["token_requests"].get("authorization_code", 0) == 0
    assert login.proc.poll() is None

    status, page = follow_redirect(location)
    code, out, err = login.finish()
    assert status == 200 and code == 0, err
    assert stored_tokens(rig, "tibber")["refresh_token"]


def test_wrong_client_secret_is_refused_clearly_and_stores_nothing(rig):
    login = rig.start_login_tibber(secret="not-the-secret")
    status, page = follow_redirect(rig.cloud.control.tibber_consent(login.url, "allow"))
    code, out, err = login.finish()

    assert status == 403 and "client secret was refused" in page
    assert code == 1
    assert "client secret was refused" in err
    assert rig.keyring.lookup("tibber") is None
    assert "not-the-secret" not in out + err


def test_login_nobody_completes_times_out_clearly(rig):
    login = rig.start_login_tibber("--timeout", "2")
    code, out, err = login.finish(timeout=20)

    assert code == 1
    assert "Nobody completed the login in 2 seconds" in err
    assert login.query()["redirect_uri"] in err, "names the redirect URI to register"
    assert rig.keyring.lookup("tibber") is None


def test_scope_option_replaces_the_default_and_limits_the_devices(rig):
    scope = "openid offline_access data-api-user-read data-api-homes-read data-api-chargers-read"
    login = rig.start_login_tibber("--scope", scope)
    assert login.query()["scope"] == scope
    follow_redirect(rig.cloud.control.tibber_consent(login.url, "allow"))
    code, out, err = login.finish()
    assert code == 0, err
    m = rig.mount("tibber")

    assert os.listdir(m / "homes" / HOME1 / "devices") == [CHARGER]


def test_login_without_client_id_names_the_option(rig):
    r = rig.run("login", "tibber", input="", provider="tibber", check=False)
    assert r.returncode != 0
    assert "--client-id" in r.stderr
    assert rig.keyring.lookup("tibber") is None


# ---- the tree

@pytest.fixture
def mounted(rig):
    # Debug logging on, so that the rig's leak check also covers the most verbose log.
    return rig.mount_tibber("debug")


def detail_calls(stats, device=None):
    return sum(n for k, n in stats["requests"].items()
               if k.startswith("GET /v1/homes/") and "/devices/" in k
               and (device is None or k.endswith("/" + device)))


def test_homes_are_the_entries_of_the_homes_list(rig, mounted):
    homes = rig.cloud.control.data()["tibber"]["homes"]
    homes = homes["homes"] if isinstance(homes, dict) else homes

    assert sorted(os.listdir(mounted / "homes")) == sorted(h["id"] for h in homes)
    for home in homes:
        assert sorted(os.listdir(mounted / "homes" / home["id"])) == ["devices", "home.json"]
        assert json.loads(read(mounted / "homes" / home["id"] / "home.json")) == home
    assert rig.cloud.control.stats()["requests"] == {"GET /v1/homes": 1}


@pytest.fixture
def mounted_without_prefetch(rig):
    return rig.mount_tibber("prefetch=0")


def test_listing_devices_costs_one_call_not_one_per_device(rig, mounted_without_prefetch):
    # Without prefetch (on by default, see test_performance.py), ls -l needs the list only.
    data = rig.cloud.control.data()["tibber"]
    devices = mounted_without_prefetch / "homes" / HOME1 / "devices"

    names = os.listdir(devices)
    for name in names:
        os.stat(devices / name)  # what ls -l does
    assert sorted(names) == sorted(d["id"] for d in data["devices"][HOME1])
    stats = rig.cloud.control.stats()
    assert stats["requests"].get(f"GET /v1/homes/{HOME1}/devices") == 1
    assert detail_calls(stats) == 0


def test_device_json_is_the_detail_and_one_fetch_feeds_its_values(rig, mounted):
    details = rig.cloud.control.data()["tibber"]["details"]
    device = mounted / "homes" / HOME1 / "devices" / CHARGER

    assert sorted(os.listdir(device)) == ["device.json", "units.json", "values"]
    assert json.loads(read(device / "device.json")) == details[CHARGER]
    assert os.listdir(device / "values") == [
        c["id"] for c in details[CHARGER]["capabilities"]] + ["online", "last_seen"]
    assert read(device / "values" / "charging.status") == b"idle\n"
    assert read(device / "values" / "grid.phaseCount") == b"3\n"
    assert read(device / "values" / "cable.locked") == b"false\n"
    assert detail_calls(rig.cloud.control.stats(), CHARGER) == 1


def test_values_hold_the_value_and_a_newline(mounted):
    devices = mounted / "homes" / HOME1 / "devices"
    assert read(devices / SHARED_VEHICLE / "values" / "storage.stateOfCharge") == b"74\n"
    assert read(devices / SHARED_VEHICLE / "values" / "charging.status") == b"idle\n"
    assert read(devices / THERMOSTAT / "values" / "heating.active") == b"true\n"
    assert read(devices / THERMOSTAT / "values" / "temperature.ambient") == b"21.3\n"
    assert read(devices / BATTERY / "values" / "storage.power") == b"\n"  # null
    with pytest.raises(FileNotFoundError):
        read(devices / CHARGER / "values" / "no.such.capability")


def test_a_vehicle_under_two_homes_is_fetched_once(rig, mounted):
    first = read(mounted / "homes" / HOME1 / "devices" / SHARED_VEHICLE / "device.json")
    second = read(mounted / "homes" / HOME2 / "devices" / SHARED_VEHICLE / "device.json")
    read(mounted / "homes" / HOME2 / "devices" / SHARED_VEHICLE / "values" / "range.remaining")

    assert first == second
    assert detail_calls(rig.cloud.control.stats(), SHARED_VEHICLE) == 1


def test_every_file_has_its_exact_size_and_jq_reads_every_json_file(rig, mounted):
    files = []
    for dirpath, dirnames, filenames in os.walk(mounted / "homes"):
        files += [os.path.join(dirpath, f) for f in filenames]
    json_files = [f for f in files if f.endswith(".json")]
    assert len(json_files) == 2 + 2 * (9 + 1)  # home.json x2, device.json, units.json
    for f in files:
        content = read(f)
        assert os.stat(f).st_size == len(content), f
        assert content.endswith(b"\n"), f
    for f in json_files:
        r = subprocess.run(["jq", "."], stdin=open(f, "rb"), capture_output=True)
        assert r.returncode == 0, (f, r.stderr)
    # Walking everything fetched each device once, the shared vehicle included.
    stats = rig.cloud.control.stats()
    assert detail_calls(stats, SHARED_VEHICLE) == 1
    assert detail_calls(stats) == 9


def test_units_sit_beside_the_bare_values_as_the_cloud_gives_them(rig, mounted):
    details = rig.cloud.control.data()["tibber"]["details"]
    for device in (SHARED_VEHICLE, CHARGER, BATTERY, THERMOSTAT):
        ddir = mounted / "homes" / HOME1 / "devices" / device
        units = json.loads(read(ddir / "units.json"))
        assert list(units) == os.listdir(ddir / "values")  # every value, in the same order
        for cap in details[device]["capabilities"]:
            assert units[cap["id"]] == cap.get("unit", ""), (device, cap["id"])
    vehicle = mounted / "homes" / HOME1 / "devices" / SHARED_VEHICLE
    assert read(vehicle / "values" / "range.remaining") == b"356000\n"  # the bare value
    r = subprocess.run(["jq", "-r", '."range.remaining"', str(vehicle / "units.json")],
                       capture_output=True, text=True, check=True)
    assert r.stdout == "m\n"
    thermostat = json.loads(read(mounted / "homes" / HOME1 / "devices" / THERMOSTAT / "units.json"))
    assert thermostat["temperature.ambient"] == "°C" and thermostat["heating.active"] == ""
    assert detail_calls(rig.cloud.control.stats()) == 4  # units.json costs no call


def test_online_and_last_seen_are_values_a_monitor_can_watch(rig):
    m = rig.mount_tibber("ttl=1")
    values = m / "homes" / HOME1 / "devices" / SHARED_VEHICLE / "values"
    seen = rig.cloud.control.data()["tibber"]["details"][SHARED_VEHICLE]["status"]["lastSeen"]

    assert read(values / "online") == b"true\n"
    assert read(values / "last_seen") == f"{seen}\n".encode()
    rig.cloud.control.tibber_online(SHARED_VEHICLE, False)
    wait_until(lambda: read(values / "online") == b"false\n", 20, "the device to read offline")
    assert read(values / "last_seen") == f"{seen}\n".encode()  # when Tibber last heard of it
    rig.cloud.control.advance_clock(120)
    rig.cloud.control.tibber_online(SHARED_VEHICLE, True)
    wait_until(lambda: read(values / "online") == b"true\n", 20, "the device back online")
    assert read(values / "last_seen").decode() > seen


def test_every_request_sends_our_user_agent(rig, mounted):
    read(mounted / "homes" / HOME1 / "home.json")
    read(mounted / "homes" / HOME1 / "devices" / BATTERY / "device.json")
    rig.cloud.control.expire_tokens()
    read(mounted / "homes" / HOME2 / "devices" / SHARED_VEHICLE / "device.json")

    stats = rig.cloud.control.stats()
    assert stats["token_requests"].get("refresh_token") == 1
    assert stats["requests_without_user_agent"] == 0
    assert stats["user_agents"] and all(
        ua.startswith(f"smarthomefs/{version()}") for ua in stats["user_agents"])


# ---- refresh

def test_expired_tokens_are_refreshed_and_the_new_refresh_token_stored(rig, mounted):
    before = stored(rig)
    rig.cloud.control.expire_tokens()

    assert read(mounted / "homes" / HOME1 / "home.json")
    tokens = rig.cloud.control.tokens()
    after = stored(rig)
    # The emulator refuses a refresh without the client's id and secret.
    assert rig.cloud.control.stats()["token_requests"]["refresh_token"] == 1
    assert after["refresh_token"] != before["refresh_token"]
    assert after["refresh_token"] in tokens["live_refresh_tokens"]
    assert before["refresh_token"] in tokens["spent_refresh_tokens"]
    assert after["client_id"] == TIBBER_CLIENT_ID
    assert after["client_secret"] == TIBBER_CLIENT_SECRET


def test_a_refresh_answer_without_refresh_token_keeps_the_old_one(rig, mounted):
    rig.cloud.control.config(tibber_refresh_returns_new_token=False)
    before = stored(rig)
    rig.cloud.control.expire_tokens()

    assert read(mounted / "homes" / HOME1 / "devices" / CHARGER / "device.json")
    after = stored(rig)
    assert rig.cloud.control.stats()["token_requests"]["refresh_token"] == 1
    assert after["access_token"] != before["access_token"]
    assert after["refresh_token"] == before["refresh_token"]
    assert after["refresh_token"] in rig.cloud.control.tokens()["live_refresh_tokens"]


# ---- the login's other ways in: a fixed port, a busy port, a prompted secret

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TestClientRegisteredWithAFixedPort:
    @pytest.fixture
    def port(self):
        return free_port()

    @pytest.fixture
    def cloud_options(self, port):
        return {"tibber_redirect_uri": [f"http://127.0.0.1:{port}/callback"]}

    def test_login_on_that_port_succeeds(self, rig, port):
        rig.login_tibber("--port", str(port))
        assert stored(rig)["refresh_token"] in rig.cloud.control.tokens()["live_refresh_tokens"]


def listening_addresses(port):
    """The local addresses of every TCP socket listening on @port, from /proc/net."""
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, hexport = local.split(":")
                if state == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                    found.append(addr)
    return sorted(found)


class TestClientRegisteredWithLocalhost:
    """Tibber matches the redirect URI exactly: a client registered with localhost, or
    with another path, logs in with --redirect-uri copied from its registration."""

    @pytest.fixture(params=["/callback", "/"])
    def uri(self, request):
        return f"http://localhost:{free_port()}{request.param}"

    @pytest.fixture
    def cloud_options(self, uri):
        return {"tibber_redirect_uri": [uri]}

    def test_login_with_that_redirect_uri_succeeds(self, rig, uri):
        login = rig.start_login_tibber("--redirect-uri", uri)
        assert login.query()["redirect_uri"] == uri
        follow_redirect(rig.cloud.control.tibber_consent(login.url, "allow"))
        code, out, err = login.finish()

        assert code == 0, err
        assert "Logged in to Tibber" in out
        assert stored(rig)["refresh_token"] in rig.cloud.control.tokens()["live_refresh_tokens"]

    def test_the_listener_is_on_the_loopback_addresses_only(self, rig, uri):
        port = urllib.parse.urlsplit(uri).port
        login = rig.start_login_tibber("--redirect-uri", uri, "--timeout", "20")
        try:
            addresses = listening_addresses(port)
        finally:
            follow_redirect(rig.cloud.control.tibber_consent(login.url, "allow"))
            code, out, err = login.finish()

        loopback = ["0100007F", "00000000000000000000000001000000"]  # 127.0.0.1, ::1
        assert "0100007F" in addresses and set(addresses) <= set(loopback), addresses
        assert code == 0, err


@pytest.mark.parametrize("uri, reason", [
    ("http://192.0.2.1:8123/callback", "must name this machine's loopback address"),
    ("https://localhost:8123/callback", "must start with http://"),
    ("http://localhost/callback", "must name its port"),
])
def test_a_redirect_uri_off_this_machine_is_refused_with_the_reason(rig, uri, reason):
    r = rig.run("login", "tibber", "--client-id", TIBBER_CLIENT_ID, "--no-browser",
                "--redirect-uri", uri, input="", provider="tibber", check=False)
    assert r.returncode == 2
    assert reason in r.stderr and uri in r.stderr
    assert rig.keyring.lookup("tibber") is None


def test_port_and_redirect_uri_together_are_refused(rig):
    r = rig.run("login", "tibber", "--client-id", TIBBER_CLIENT_ID, "--port", "8123",
                "--redirect-uri", "http://localhost:8123/callback", input="",
                provider="tibber", check=False)
    assert r.returncode == 2
    assert "give only --redirect-uri" in r.stderr


def test_a_busy_port_is_named_in_the_message(rig):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = rig.run("login", "tibber", "--client-id", TIBBER_CLIENT_ID, "--no-browser",
                    "--port", str(port), input=TIBBER_CLIENT_SECRET + "\n", provider="tibber",
                    check=False)
    assert r.returncode == 1
    assert f"Could not listen on 127.0.0.1:{port}" in r.stderr
    assert "in use" in r.stderr


def test_secret_typed_at_a_terminal_is_not_echoed_and_is_stored(rig):
    master, slave = os.openpty()
    cmd = [str(BIN), "login", "tibber", "--client-id", TIBBER_CLIENT_ID, "--no-browser",
           "-o", ",".join(rig.options("tibber"))]
    proc = subprocess.Popen(cmd, env=rig.env, stdin=slave, stdout=subprocess.PIPE,
                            stderr=slave, text=True)
    os.close(slave)
    tty = bytearray()

    def tty_has(text):
        while select.select([master], [], [], 0)[0]:
            try:
                tty.extend(os.read(master, 4096))
            except OSError:  # the child closed the terminal
                break
        return text.encode() in tty

    try:
        wait_until(lambda: tty_has("Client secret"), 20, "the secret prompt")
        os.write(master, (TIBBER_CLIENT_SECRET + "\n").encode())
        proc.stdout.readline()  # "Open this link in a browser to log in:"
        url = proc.stdout.readline().strip()
        follow_redirect(rig.cloud.control.tibber_consent(url, "allow"))
        out, _ = proc.communicate(timeout=30)
        tty_has("")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.close(master)
    rig.outputs += [out, tty.decode(errors="replace")]

    assert proc.returncode == 0, tty.decode(errors="replace")
    assert TIBBER_CLIENT_SECRET.encode() not in tty, "the secret was echoed"
    assert stored(rig)["client_secret"] == TIBBER_CLIENT_SECRET
