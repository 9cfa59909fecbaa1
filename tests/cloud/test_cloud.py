"""Tests of the emulated cloud itself (run: /usr/bin/python3 -m pytest -q tests/cloud)."""

import datetime
import email.utils
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import zoneinfo

import pytest

from control import (DEVICE_GRANT, TADO_CLIENT_ID, TIBBER_CLIENT_ID, TIBBER_CLIENT_SECRET,
                     pkce_pair, start_cloud)

HERE = os.path.dirname(os.path.abspath(__file__))
UA = {"User-Agent": "smarthomefs-tests/1.0"}
REDIRECT = "http://127.0.0.1:8765/callback"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_cloud(tmp_path_factory.mktemp("cloud"))
    yield srv
    assert srv.stop() == 0


@pytest.fixture
def cloud(server):
    """The shared instance, reset to its start state before each test."""
    server.control.reset()
    return server


def api(cloud, path, token, headers=None):
    h = {"Authorization": f"Bearer {token}", **UA, **(headers or {})}
    return cloud.control.request("GET", path, headers=h)


def tado_token(cloud):
    return cloud.control.tado_login()["access_token"]


def form(cloud, path, fields, headers=None):
    return cloud.control.request("POST", path, fields, headers=headers)


def device_authorize(cloud):
    r = form(cloud, "/oauth2/device_authorize", {"client_id": TADO_CLIENT_ID,
                                                 "scope": "offline_access"})
    assert r.status == 200
    return r.json()


def poll(cloud, device_code):
    return form(cloud, "/oauth2/token", {"client_id": TADO_CLIENT_ID, "device_code": device_code,
                                         "grant_type": DEVICE_GRANT})


def authorize_url(cloud, **extra):
    q = {"response_type": "code", "client_id": TIBBER_CLIENT_ID, "redirect_uri": REDIRECT,
         "scope": "openid offline_access data-api-user-read data-api-homes-read "
                  "data-api-vehicles-read", "state": "xyz", **extra}
    return "/connect/authorize?" + urllib.parse.urlencode(q)


def query_of(location):
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))


# ------------------------------------------------------------------ certificates and server

def test_make_certs_is_idempotent_and_cert_has_ip_san(tmp_path):
    script = os.path.join(HERE, "make_certs.sh")
    out = subprocess.run(["sh", script, str(tmp_path)], capture_output=True, text=True, check=True)
    assert out.stdout == "" and out.stderr == ""
    names = ["ca.pem", "ca.key", "server.pem", "server.key", "wrong-ca.pem", "wrong.pem", "wrong.key"]
    mtimes = {n: os.stat(tmp_path / n).st_mtime_ns for n in names}
    subprocess.run(["sh", script, str(tmp_path)], check=True)
    assert {n: os.stat(tmp_path / n).st_mtime_ns for n in names} == mtimes
    text = subprocess.run(["openssl", "x509", "-in", str(tmp_path / "server.pem"), "-noout",
                           "-text"], capture_output=True, text=True, check=True).stdout
    assert "IP Address:127.0.0.1" in text and "DNS:localhost" in text
    for cert, ca in (("server.pem", "ca.pem"), ("wrong.pem", "wrong-ca.pem")):
        subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / ca), str(tmp_path / cert)],
                       capture_output=True, check=True)


def test_start_writes_port_file_and_prints_listening_line(server):
    with open(server.port_file) as f:
        assert int(f.read()) == server.port
    assert f"listening on https://127.0.0.1:{server.port}" in server.log()


def test_client_trusting_wrong_ca_is_rejected(server):
    ctx = ssl.create_default_context(cafile=os.path.join(server.certdir, "wrong-ca.pem"))
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=5)
    with pytest.raises(ssl.SSLCertVerificationError):
        conn.request("GET", "/_control/stats")
    conn.close()


def test_keep_alive_serves_several_requests_on_one_connection(cloud):
    ctx = ssl.create_default_context(cafile=cloud.cafile)
    conn = http.client.HTTPSConnection("127.0.0.1", cloud.port, context=ctx, timeout=5)
    conn.request("GET", "/_control/stats")
    r = conn.getresponse()
    assert r.getheader("Content-Length") and r.read()
    sock = conn.sock
    conn.request("GET", "/v1/homes", headers=UA)
    r = conn.getresponse()
    assert r.status == 401 and r.getheader("Content-Length") == str(len(r.read()))
    assert conn.sock is sock
    conn.close()


def test_sigterm_exits_cleanly_and_removes_port_file(tmp_path):
    srv = start_cloud(tmp_path, tado_homes=2, tibber_homes=1)
    data = srv.control.data()
    assert list(data["tado"]["homes"]) == ["1001", "1002"]
    assert len(data["tibber"]["homes"]) == 1
    assert srv.stop() == 0
    assert not os.path.exists(srv.port_file)


# ------------------------------------------------------------------ tado login

def test_tado_device_authorize_accepts_query_or_form_and_checks_client(cloud):
    q = urllib.parse.urlencode({"client_id": TADO_CLIENT_ID, "scope": "offline_access"})
    r = cloud.control.request("POST", "/oauth2/device_authorize?" + q)
    body = r.json()
    assert r.status == 200
    assert set(body) == {"device_code", "expires_in", "interval", "user_code",
                         "verification_uri", "verification_uri_complete"}
    assert re.fullmatch(r"[A-Z0-9]{6}", body["user_code"])
    assert body["expires_in"] == 300 and body["interval"] == 5
    assert body["verification_uri"] == cloud.url + "/oauth2/device"
    assert body["verification_uri_complete"] == (cloud.url + "/oauth2/device?user_code="
                                                 + body["user_code"])
    assert device_authorize(cloud)["user_code"] != body["user_code"]
    bad = form(cloud, "/oauth2/device_authorize", {"client_id": "nope"})
    assert bad.status == 400 and bad.json()["error"] == "invalid_client"
    assert cloud.control.stats()["token_requests"]["device_authorize"] == 3


def test_tado_token_is_pending_until_approved_then_single_use(cloud):
    cloud.control.config(device_interval=0)
    dev = device_authorize(cloud)
    r = poll(cloud, dev["device_code"])
    assert r.status == 400 and r.json()["error"] == "authorization_pending"
    assert cloud.control.pending() == [dev["user_code"]]
    cloud.control.approve(dev["user_code"])
    r = poll(cloud, dev["device_code"])
    tok = r.json()
    assert r.status == 200
    assert set(tok) == {"access_token", "expires_in", "refresh_token", "scope", "token_type",
                        "userId"}
    assert tok["expires_in"] == 600 and tok["scope"] == "offline_access"
    assert tok["token_type"] == "Bearer"
    again = poll(cloud, dev["device_code"])
    assert again.status == 400 and again.json()["error"] == "invalid_grant"
    assert cloud.control.stats()["token_requests"]["device_code"] == 3


def test_tado_polling_faster_than_interval_gets_slow_down(cloud):
    cloud.control.config(device_interval=1)
    dev = device_authorize(cloud)
    assert poll(cloud, dev["device_code"]).json()["error"] == "authorization_pending"
    r = poll(cloud, dev["device_code"])
    assert r.status == 400 and r.json()["error"] == "slow_down" and r.json()["interval"] == 6


def test_tado_device_code_expires_and_can_be_denied(cloud):
    cloud.control.config(device_expires_in=0)
    dev = device_authorize(cloud)
    assert poll(cloud, dev["device_code"]).json()["error"] == "expired_token"
    assert cloud.control.pending() == []
    cloud.control.config(device_expires_in=300, device_interval=0)
    dev = device_authorize(cloud)
    assert cloud.control.deny() == {"denied": [dev["user_code"]]}
    r = poll(cloud, dev["device_code"])
    assert r.status == 400 and r.json()["error"] == "access_denied"


def test_tado_auto_approve_issues_tokens_on_first_poll(cloud):
    cloud.control.config(auto_approve=True)
    dev = device_authorize(cloud)
    assert cloud.control.pending() == []
    assert poll(cloud, dev["device_code"]).status == 200


def test_tado_verification_page_needs_client_id_and_can_approve(cloud):
    dev = device_authorize(cloud)
    path = urllib.parse.urlsplit(dev["verification_uri_complete"])
    r = cloud.control.request("GET", path.path + "?" + path.query)
    assert r.status == 400 and b"missing_client_id" in r.body
    r = cloud.control.request("GET", f"{path.path}?{path.query}&client_id={TADO_CLIENT_ID}")
    assert r.status == 200 and dev["user_code"].encode() in r.body
    assert r.headers["Content-Type"].startswith("text/html")
    r = form(cloud, "/oauth2/device", {"user_code": dev["user_code"], "decision": "allow"})
    assert r.status == 200 and cloud.control.pending() == []
    assert poll(cloud, dev["device_code"]).status == 200


def test_tado_refresh_rotates_and_reuse_is_invalid_grant(cloud):
    first = cloud.control.tado_login()
    params = {"client_id": TADO_CLIENT_ID, "grant_type": "refresh_token"}
    r = form(cloud, "/oauth2/token", {**params, "refresh_token": first["refresh_token"]})
    second = r.json()
    assert r.status == 200 and second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    r = form(cloud, "/oauth2/token", {**params, "refresh_token": first["refresh_token"]})
    assert r.status == 400
    assert r.json() == {"error": "invalid_grant",
                        "error_description": "The refresh_token is invalid.",
                        "error_reason": "refresh_token_not_found"}
    toks = cloud.control.tokens()
    assert toks["live_refresh_tokens"] == [second["refresh_token"]]
    assert toks["spent_refresh_tokens"] == [first["refresh_token"]]
    assert toks["live_access_tokens"] == 2
    stats = cloud.control.stats()
    assert stats["refresh_reuse"] == 1 and stats["token_requests"]["refresh_token"] == 2
    # the seed sends the refresh as query parameters: accepted too
    q = urllib.parse.urlencode({**params, "refresh_token": second["refresh_token"]})
    assert cloud.control.request("POST", "/oauth2/token?" + q).status == 200


def test_tado_revoked_refresh_tokens_are_rejected(cloud):
    tok = cloud.control.tado_login()
    cloud.control.revoke_refresh_tokens()
    r = form(cloud, "/oauth2/token", {"client_id": TADO_CLIENT_ID, "grant_type": "refresh_token",
                                      "refresh_token": tok["refresh_token"]})
    assert r.status == 400 and r.json()["error"] == "invalid_grant"
    assert cloud.control.tokens()["live_refresh_tokens"] == []


# ------------------------------------------------------------------ tado API

def test_tado_api_needs_a_valid_unexpired_bearer_token(cloud):
    for headers in ({}, {"Authorization": "Bearer nope"}):
        r = cloud.control.request("GET", "/api/v2/me", headers=headers)
        assert r.status == 401 and r.json()["errors"][0]["code"] == "unauthorized"
    token = tado_token(cloud)
    assert api(cloud, "/api/v2/me", token).status == 200
    cloud.control.expire_tokens()
    assert api(cloud, "/api/v2/me", token).status == 401
    assert cloud.control.tokens()["live_access_tokens"] == 0
    cloud.control.config(access_ttl=1)
    tok = cloud.control.tado_login()
    assert tok["expires_in"] == 1
    cloud.control.advance_clock(1.05)
    assert api(cloud, "/api/v2/me", tok["access_token"]).status == 401


def test_one_clock_moves_forward_only_and_reset_puts_it_back(cloud):
    before = cloud.control.clock()
    assert before["offset_s"] == 0 and abs(before["now_s"] - time.time()) < 5
    tado = cloud.control.tado_login()["access_token"]
    tibber = cloud.control.tibber_login()["access_token"]
    moved = cloud.control.advance_clock(3599)
    assert moved["offset_s"] == 3599 and moved["iso"].endswith("Z")
    assert api(cloud, "/v1/homes", tibber).status == 200  # Tibber's access token: 1 h
    assert api(cloud, "/api/v2/me", tado).status == 401    # tado's: 10 min
    cloud.control.advance_clock(2)
    assert api(cloud, "/v1/homes", tibber).status == 401
    with pytest.raises(urllib.error.HTTPError) as e:
        cloud.control.advance_clock(-10)
    assert e.value.code == 400 and cloud.control.clock()["offset_s"] == 3601
    cloud.control.reset()
    assert cloud.control.clock()["offset_s"] == 0


def test_tado_endpoints_serve_the_control_dataset(cloud):
    token = tado_token(cloud)
    data = cloud.control.data()["tado"]
    assert api(cloud, "/api/v2/me", token).json() == data["me"]
    assert data["me"]["homes"] == [{"id": 1001, "name": "Home 1"}]
    h = data["homes"]["1001"]
    for suffix, key in (("", "home"), ("/state", "state"), ("/weather", "weather"),
                        ("/zones", "zones"), ("/zoneStates", "zoneStates"),
                        ("/devices", "devices"), ("/deviceList", "deviceList"),
                        ("/mobileDevices", "mobileDevices")):
        r = api(cloud, "/api/v2/homes/1001" + suffix, token)
        assert r.status == 200 and r.json() == h[key], suffix
    assert [z["type"] for z in h["zones"]] == ["HEATING", "HEATING", "HOT_WATER"]
    assert h["home"]["zonesCount"] == 3 and h["home"]["dateTimeZone"] == "Europe/Berlin"
    assert h["zoneStates"]["zoneStates"]["3"]["sensorDataPoints"] == {}
    state = api(cloud, "/api/v2/homes/1001/zones/1/state", token).json()
    assert state == h["zoneStates"]["zoneStates"]["1"]
    inside = state["sensorDataPoints"]["insideTemperature"]
    assert set(inside) == {"celsius", "fahrenheit", "timestamp", "type", "precision"}
    assert state["link"] == {"state": "ONLINE"} and state["overlay"] is None
    serials = [d["serialNo"] for d in h["devices"]]
    assert [s[:2] for s in serials] == ["IB", "RU", "VA", "VA"]
    assert all(re.fullmatch(r"[A-Z]{2}\d{10}", s) for s in serials)
    assert api(cloud, "/api/v2/devices/" + serials[2], token).json() == h["devices"][2]
    zoned = [d for z in h["zones"] for d in z["devices"]]
    assert all("duties" in d for d in zoned) and len(zoned) == 3
    assert "zone" not in h["deviceList"]["entries"][0]


def test_tado_data_is_deterministic_across_instances(tmp_path, cloud):
    other = start_cloud(tmp_path)
    try:
        assert other.control.data()["tado"] == cloud.control.data()["tado"]
        assert other.control.data()["tibber"] == cloud.control.data()["tibber"]
    finally:
        other.stop()


def test_tado_unknown_zone_device_or_path_is_404(cloud):
    token = tado_token(cloud)
    for path in ("/api/v2/homes/abc/zones", "/api/v2/homes/1001/zones/9/state",
                 "/api/v2/devices/VA0000000000", "/api/v2/nothing/here"):
        r = api(cloud, path, token)
        assert r.status == 404, path
        assert r.json()["errors"][0]["code"] == "notFound"


def test_tado_home_of_another_account_is_403_access_denied(cloud):
    token = tado_token(cloud)
    for path in ("/api/v2/homes/9999", "/api/v2/homes/9999/zoneStates",
                 "/api/v2/homes/9999/devices"):
        r = api(cloud, path, token)
        assert r.status == 403, path
        assert r.headers["Content-Type"] == "application/json;charset=UTF-8"
        assert r.json() == {"errors": [{"code": "accessDenied", "title":
                                        "current user is not allowed to access home 9999"}]}
    r = api(cloud, "/hops/homes/9999/rooms", token)
    assert r.status == 403 and r.json()["status"] == 403 and r.json()["error"] == "Forbidden"


def test_tado_refresh_token_dies_30_days_after_issue_with_tados_body(cloud):
    assert cloud.control.get_config()["refresh_ttl"] == 30 * 86400
    params = {"client_id": TADO_CLIENT_ID, "grant_type": "refresh_token"}
    first = cloud.control.tado_login()
    cloud.control.advance_clock(29 * 86400)
    r = form(cloud, "/oauth2/token", {**params, "refresh_token": first["refresh_token"]})
    assert r.status == 200  # a day to spare: rotated, and the new one lives 30 days again
    second = r.json()["refresh_token"]
    cloud.control.advance_clock(30 * 86400 - 1)
    assert form(cloud, "/oauth2/token", {**params, "refresh_token": second}).status == 200
    third = cloud.control.tado_login()["refresh_token"]
    cloud.control.advance_clock(30 * 86400)
    r = form(cloud, "/oauth2/token", {**params, "refresh_token": third})
    assert r.status == 400
    assert r.headers["Content-Type"] == "application/json"
    assert r.json() == {"error": "invalid_grant",
                        "error_description": "The refresh_token is invalid.",
                        "error_reason": "refresh_token_not_found"}
    toks, stats = cloud.control.tokens(), cloud.control.stats()
    assert third in toks["tado"]["expired_refresh_tokens"]
    assert third not in toks["live_refresh_tokens"]
    assert stats["refresh_expired"] == 1 and stats["refresh_reuse"] == 0


def test_tado_ratelimit_headers_carry_no_t_until_the_empty_429(cloud):
    cloud.control.config(quota=3, retry_after="7")
    token = tado_token(cloud)
    seen = []
    for _ in range(3):
        r = api(cloud, "/api/v2/me", token)
        assert r.status == 200
        assert r.headers["RateLimit-Policy"] == '"perday";q=3;w=86400'
        seen.append(r.headers["RateLimit"])
    assert seen == ['"perday";r=2', '"perday";r=1', '"perday";r=0']
    for _ in range(2):
        r = api(cloud, "/api/v2/homes/1001/zoneStates", token)
        assert r.status == 429 and r.body == b"" and r.headers["Content-Length"] == "0"
        assert re.fullmatch(r'"perday";r=0;t=\d+', r.headers["RateLimit"])
        assert r.headers["Retry-After"] == "7"
    stats = cloud.control.stats()
    assert stats["status_counts"]["429"] == 2
    assert list(stats["too_many_requests_by_window"].values()) == [2]


def test_tado_quota_resets_at_the_accounts_time_of_day_that_t_of_a_429_tells(cloud):
    clock = cloud.control.clock()["now_s"]
    # The account's reset is 100 s from now, at a time of day the answers do not tell.
    reset_s = int(clock + 100) % 86400
    cloud.control.config(quota=1, quota_reset_s=reset_s)
    token = tado_token(cloud)
    r = api(cloud, "/api/v2/me", token)
    assert r.status == 200 and r.headers["RateLimit"] == '"perday";r=0'
    r = api(cloud, "/api/v2/me", token)
    assert r.status == 429
    t = int(re.search(r";t=(\d+)", r.headers["RateLimit"]).group(1))
    assert 98 <= t <= 100
    cloud.control.advance_clock(t - 2)
    assert api(cloud, "/api/v2/me", token).status == 429
    cloud.control.advance_clock(2)
    # Not at the first call plus a day, nor at midnight: at the account's own time.
    r = api(cloud, "/api/v2/me", token)
    assert r.status == 200 and r.headers["RateLimit"] == '"perday";r=0'
    assert list(cloud.control.stats()["too_many_requests_by_window"].values()) == [2]


def test_tado_quota_window_refills(cloud):
    cloud.control.config(quota=1, quota_window=60, quota_reset_s=0)
    token = tado_token(cloud)
    start = cloud.control.clock()["now_s"]
    cloud.control.advance_clock(60 - start % 60 + 0.01)  # a window's start
    assert api(cloud, "/api/v2/me", token).status == 200
    assert api(cloud, "/api/v2/me", token).status == 429
    cloud.control.advance_clock(60)
    r = api(cloud, "/api/v2/me", token)
    assert r.status == 200 and r.headers["RateLimit"] == '"perday";r=0'


def test_tado_zone_temperature_and_remove_zone_change_the_api(cloud):
    token = tado_token(cloud)
    cloud.control.tado_zone_temperature(1001, 1, 22.5)
    inside = api(cloud, "/api/v2/homes/1001/zoneStates", token).json()[
        "zoneStates"]["1"]["sensorDataPoints"]["insideTemperature"]
    assert inside["celsius"] == 22.5 and inside["fahrenheit"] == 72.5
    assert inside["timestamp"].startswith(time.strftime("%Y-%m-%dT", time.gmtime()))
    cloud.control.tado_remove_zone(1001, 2)
    zones = api(cloud, "/api/v2/homes/1001/zones", token).json()
    assert [z["id"] for z in zones] == [1, 3]
    assert api(cloud, "/api/v2/homes/1001", token).json()["zonesCount"] == 2
    assert api(cloud, "/api/v2/homes/1001/zones/2/state", token).status == 404
    assert "2" not in api(cloud, "/api/v2/homes/1001/zoneStates", token).json()["zoneStates"]


def day_report(cloud, token, home, zone, date=None):
    return api(cloud, f"/api/v2/homes/{home}/zones/{zone}/dayReport"
               + (f"?date={date}" if date else ""), token)


def test_tado_day_report_has_pytados_shape_and_the_home_local_day(cloud):
    token = tado_token(cloud)
    r = day_report(cloud, token, 1001, 1, "2026-03-29")  # Europe/Berlin: a 23-hour day
    rep = r.json()
    assert r.status == 200 and r.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert set(rep) == {"zoneType", "interval", "hoursInDay", "measuredData", "stripes",
                        "settings", "callForHeat", "weather"}
    assert rep["zoneType"] == "HEATING" and rep["hoursInDay"] == 23
    assert rep["interval"] == {"from": "2026-03-28T22:45:00.000Z", "to": "2026-03-29T22:15:00.000Z"}
    md = rep["measuredData"]
    assert set(md) == {"measuringDeviceConnected", "insideTemperature", "humidity"}
    temps, hums = md["insideTemperature"], md["humidity"]
    assert (temps["timeSeriesType"], temps["valueType"]) == ("dataPoints", "temperature")
    assert (hums["valueType"], hums["percentageUnit"]) == ("percentage", "UNIT_INTERVAL")
    assert len(temps["dataPoints"]) == len(hums["dataPoints"]) == 23 * 4 + 3
    assert temps["dataPoints"][0]["timestamp"] == "2026-03-28T22:45:00.000Z"
    assert set(temps["dataPoints"][0]["value"]) == {"celsius", "fahrenheit"}
    assert temps["min"]["celsius"] == min(p["value"]["celsius"] for p in temps["dataPoints"])
    assert all(0 < p["value"] < 1 for p in hums["dataPoints"])
    for key in ("stripes", "settings", "callForHeat"):
        ivs = rep[key]["dataIntervals"]
        assert rep[key]["timeSeriesType"] == "dataIntervals"
        assert ivs[0]["from"] == rep["interval"]["from"] and ivs[-1]["to"] == rep["interval"]["to"]
        assert all(a["to"] == b["from"] for a, b in zip(ivs, ivs[1:])), key
    assert {i["value"] for i in rep["callForHeat"]["dataIntervals"]} <= {"NONE", "LOW", "MEDIUM",
                                                                          "HIGH"}
    assert rep["stripes"]["dataIntervals"][0]["value"]["stripeType"] == "HOME"
    assert set(rep["weather"]) == {"condition", "sunny", "slots"}
    assert list(rep["weather"]["slots"]["slots"]) == ["04:00", "08:00", "12:00", "16:00", "20:00"]
    # a finished day is the same bytes whenever it is asked
    cloud.control.advance_clock(86400)
    assert day_report(cloud, tado_token(cloud), 1001, 1, "2026-03-29").body == r.body
    assert cloud.control.stats()["day_reports"] == {"1001/1/2026-03-29": 2}


def test_tado_day_report_of_today_ends_now_and_grows(cloud):
    token = tado_token(cloud)
    rep = day_report(cloud, token, 1001, 2).json()  # no date: today
    now = cloud.control.clock()["now_s"]
    today = datetime.datetime.fromtimestamp(now, zoneinfo.ZoneInfo("Europe/Berlin")).date()
    assert abs(parse_z(rep["interval"]["to"]) - now) < 5
    points = rep["measuredData"]["insideTemperature"]["dataPoints"]
    cloud.control.advance_clock(1800)
    later = day_report(cloud, tado_token(cloud), 1001, 2, today.isoformat()).json()
    assert later["interval"]["from"] == rep["interval"]["from"]
    more = later["measuredData"]["insideTemperature"]["dataPoints"]
    assert len(more) > len(points) and more[:len(points)] == points


def parse_z(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_tado_day_report_errors_count_against_the_quota(cloud):
    token = tado_token(cloud)
    cloud.control.tado_zone_created(1001, 1, days_ago=2)
    today = datetime.datetime.fromtimestamp(cloud.control.clock()["now_s"],
                                            zoneinfo.ZoneInfo("Europe/Berlin")).date()
    day = datetime.timedelta(days=1)
    cases = [(1001, 1, (today + day).isoformat(), 422),   # the future
             (1001, 1, (today - 3 * day).isoformat(), 422),  # before the zone existed
             (1001, 1, (today - 2 * day).isoformat(), 200),
             (1001, 1, "2026-13-01", 400), (1001, 1, "yesterday", 400),
             (1001, 3, today.isoformat(), 422),   # HOT_WATER: not supported
             (1001, 9, today.isoformat(), 404), (4242, 1, today.isoformat(), 403)]
    left = []
    for home, zone, date, status in cases:
        r = day_report(cloud, token, home, zone, date)
        assert r.status == status, (zone, date, r.body)
        if status != 200:
            assert set(r.json()["errors"][0]) == {"code", "title"}
        left.append(int(re.search(r"r=(\d+)", r.headers["RateLimit"]).group(1)))
    assert left == list(range(left[0], left[0] - len(cases), -1))


def test_tado_x_home_has_no_day_report_on_either_host(xcloud):
    token = tado_token(xcloud)
    assert day_report(xcloud, token, 1001, 1).status == 200
    r = day_report(xcloud, token, 1002, 1)
    assert r.status == 404 and r.json()["errors"][0]["code"] == "notFound"
    assert api(xcloud, "/hops/homes/1002/rooms/1/dayReport", token).status == 404


# ------------------------------------------------------------------ tado X (hops)

@pytest.fixture(scope="module")
def xserver(tmp_path_factory):
    srv = start_cloud(tmp_path_factory.mktemp("cloudx"), tado_x_homes=1)
    yield srv
    assert srv.stop() == 0


@pytest.fixture
def xcloud(xserver):
    xserver.control.reset()
    return xserver


def test_every_tado_home_says_its_generation_and_x_homes_have_no_zones_on_my_tado(xcloud):
    token = tado_token(xcloud)
    me = api(xcloud, "/api/v2/me", token).json()
    assert me["homes"] == [{"id": 1001, "name": "Home 1"}, {"id": 1002, "name": "Home 2"}]
    pre, x = (api(xcloud, f"/api/v2/homes/{h}", token).json() for h in (1001, 1002))
    assert pre["generation"] == "PRE_LINE_X" and pre["zonesCount"] == 3
    assert x["generation"] == "LINE_X" and x["zonesCount"] == 0
    for suffix, empty in (("/zones", []), ("/devices", []), ("/zoneStates", {"zoneStates": {}}),
                          ("/deviceList", {"entries": []})):
        r = api(xcloud, "/api/v2/homes/1002" + suffix, token)
        assert r.status == 200 and r.json() == empty, suffix
    for suffix in ("/state", "/weather", "/mobileDevices"):
        assert api(xcloud, "/api/v2/homes/1002" + suffix, token).status == 200


def test_tado_x_rooms_and_devices_on_hops_in_pytado_shapes(xcloud):
    token = tado_token(xcloud)
    data = xcloud.control.data()["tado"]["homes"]["1002"]["hops"]
    r = api(xcloud, "/hops/homes/1002/rooms", token)
    rooms = r.json()
    assert r.status == 200 and rooms == data["rooms"] and [x["id"] for x in rooms] == [1, 2, 3]
    for room in rooms:
        assert set(room) == {"id", "name", "sensorDataPoints", "setting", "manualControlTermination",
                             "boostMode", "heatingPower", "connection", "openWindow",
                             "nextScheduleChange", "nextTimeBlock", "balanceControl"}
        assert isinstance(room["sensorDataPoints"]["insideTemperature"]["value"], float)
        assert isinstance(room["sensorDataPoints"]["humidity"]["percentage"], int)
        assert isinstance(room["heatingPower"]["percentage"], int)
        assert room["connection"] == {"state": "CONNECTED"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", room["nextTimeBlock"]["start"])
        one = api(xcloud, f"/hops/homes/1002/rooms/{room['id']}", token)
        assert one.status == 200 and one.json() == room
    assert rooms[0]["setting"] == {"power": "ON", "temperature": {"value": 19.5}}
    assert rooms[1]["manualControlTermination"]["type"] == "NEXT_TIME_BLOCK"
    assert rooms[2]["setting"] == {"power": "OFF", "temperature": None}
    assert rooms[2]["openWindow"] == {"activated": True, "expiryInSeconds": 600}
    rad = api(xcloud, "/hops/homes/1002/roomsAndDevices", token).json()
    assert rad == data["roomsAndDevices"] and set(rad) == {"rooms", "otherDevices"}
    assert [(x["roomId"], x["roomName"]) for x in rad["rooms"]] == [
        (x["id"], x["name"]) for x in rooms]
    devices = [d for x in rad["rooms"] for d in x["devices"]]
    assert [d["type"] for d in devices] == ["VA04", "TR04", "VA04", "VA04"]
    for d in devices:
        assert {"serialNumber", "type", "firmwareVersion", "connection", "batteryState",
                "temperatureAsMeasured", "temperatureOffset", "childLockEnabled"} <= set(d)
        assert re.fullmatch(r"(VA|TR)\d{10}", d["serialNumber"])
    assert [d["type"] for d in rad["otherDevices"]] == ["IB02"]
    assert "batteryState" not in rad["otherDevices"][0]
    assert api(xcloud, "/hops/homes/1002", token).json()["roomCount"] == 3


def test_tado_hops_errors_are_spring_bodies_and_calls_count_against_the_quota(xcloud):
    token = tado_token(xcloud)
    for path, status in (("/hops/homes/1002/rooms/9", 404), ("/hops/homes/1001/rooms", 404),
                         ("/hops/homes/4242/roomsAndDevices", 403)):
        r = api(xcloud, path, token)
        body = r.json()
        assert r.status == status and body["status"] == status, path
        assert body["path"] == path[len("/hops"):]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00", body["timestamp"])
    assert cloud_requests(xcloud, "/hops/") == 3
    left = [api(xcloud, p, token).headers["RateLimit"] for p in
            ("/api/v2/me", "/hops/homes/1002/rooms", "/api/v2/me")]
    r = [int(re.search(r"r=(\d+)", h).group(1)) for h in left]
    assert r[0] - r[1] == 1 and r[1] - r[2] == 1  # one budget for both hosts
    assert xcloud.control.request("GET", "/hops/homes/1002/rooms").status == 401


def test_tado_zone_temperature_and_remove_zone_work_on_x_rooms(xcloud):
    token = tado_token(xcloud)
    xcloud.control.tado_zone_temperature(1002, 1, 23.25, humidity=51)
    room = api(xcloud, "/hops/homes/1002/rooms/1", token).json()
    assert room["sensorDataPoints"] == {"insideTemperature": {"value": 23.25},
                                        "humidity": {"percentage": 51}}
    xcloud.control.tado_remove_zone(1002, 1)
    assert [x["id"] for x in api(xcloud, "/hops/homes/1002/rooms", token).json()] == [2, 3]
    rad = api(xcloud, "/hops/homes/1002/roomsAndDevices", token).json()
    assert [d["type"] for x in rad["rooms"] for d in x["devices"]] == ["VA04", "VA04"]


def cloud_requests(cloud, prefix):
    return sum(n for k, n in cloud.control.stats()["requests"].items()
               if k.split(" ", 1)[1].startswith(prefix))


# ------------------------------------------------------------------ Tibber login

def test_tibber_authorize_rejects_unknown_client_or_redirect_without_redirecting(cloud):
    for extra in ({"client_id": "someone-else"}, {"redirect_uri": REDIRECT + "/"},
                  {"redirect_uri": "https://evil.example/callback"}):
        r = cloud.control.request("GET", authorize_url(cloud, **extra), headers=UA)
        assert r.status == 400 and "Location" not in r.headers
        assert r.headers["Content-Type"].startswith("text/html")


def test_tibber_consent_allow_then_pkce_code_exchange(cloud):
    verifier, challenge = pkce_pair()
    url = authorize_url(cloud, code_challenge=challenge, code_challenge_method="S256")
    page = cloud.control.request("GET", url, headers=UA)
    assert page.status == 200
    text = page.body.decode()
    assert '<button id="allow" name="decision" value="allow"' in text
    assert '<button id="deny" name="decision" value="deny"' in text
    assert "data-api-vehicles-read" in text and 'action="/connect/authorize/decision"' in text
    location = cloud.control.tibber_consent(cloud.url + url)
    assert location.startswith(REDIRECT + "?")
    q = query_of(location)
    assert q["state"] == "xyz" and q["code"]
    fields = {"grant_type": "authorization_code", "code": q["code"], "redirect_uri": REDIRECT,
              "client_id": TIBBER_CLIENT_ID, "client_secret": TIBBER_CLIENT_SECRET}
    r = form(cloud, "/connect/token", {**fields, "code_verifier": verifier})
    tok = r.json()
    assert r.status == 200
    assert {"access_token", "refresh_token", "expires_in", "token_type", "scope",
            "id_token"} <= set(tok)
    assert tok["expires_in"] == 3600 and tok["token_type"] == "Bearer"
    r = form(cloud, "/connect/token", {**fields, "code_verifier": verifier})
    assert r.status == 400 and r.json()["error"] == "invalid_grant"  # codes are single use
    # wrong or missing verifier, wrong redirect_uri
    for change in ({"code_verifier": "wrong"}, {}, {"redirect_uri": REDIRECT + "x",
                                                    "code_verifier": verifier}):
        q = query_of(cloud.control.tibber_consent(cloud.url + url))
        r = form(cloud, "/connect/token", {**fields, "code": q["code"], **change})
        assert r.status == 400 and r.json()["error"] == "invalid_grant", change
    assert cloud.control.stats()["token_requests"]["authorization_code"] == 5


def test_tibber_consent_deny_redirects_with_access_denied(cloud):
    q = query_of(cloud.control.tibber_consent(cloud.url + authorize_url(cloud), "deny"))
    assert q["error"] == "access_denied" and q["state"] == "xyz" and "code" not in q


def test_tibber_auto_approve_redirects_at_once_and_custom_redirect_list(tmp_path):
    uri = "http://localhost:9/cb/"
    srv = start_cloud(tmp_path, auto_approve=True, tibber_redirect_uri=[uri],
                      tibber_client_id="cid", tibber_client_secret="sec")
    try:
        q = {"response_type": "code", "client_id": "cid", "redirect_uri": uri,
             "scope": "openid data-api-user-read"}
        r = srv.control.request("GET", "/connect/authorize?" + urllib.parse.urlencode(q))
        assert r.status == 302 and r.headers["Location"].startswith(uri + "?code=")
        q["redirect_uri"] = REDIRECT  # the default pattern no longer applies
        r = srv.control.request("GET", "/connect/authorize?" + urllib.parse.urlencode(q))
        assert r.status == 400
    finally:
        srv.stop()


def test_tibber_token_endpoint_requires_client_secret(cloud):
    q = query_of(cloud.control.tibber_consent(cloud.url + authorize_url(cloud)))
    fields = {"grant_type": "authorization_code", "code": q["code"], "redirect_uri": REDIRECT,
              "client_id": TIBBER_CLIENT_ID}
    for secret in ({}, {"client_secret": "wrong"}):
        r = form(cloud, "/connect/token", {**fields, **secret})
        assert r.status == 401 and r.json() == {"error": "invalid_client"}
    r = form(cloud, "/connect/token", fields, headers={
        "Authorization": "Basic " + __import__("base64").b64encode(
            f"{TIBBER_CLIENT_ID}:{TIBBER_CLIENT_SECRET}".encode()).decode()})
    assert r.status == 200


def test_tibber_refresh_rotates_or_keeps_the_old_token_when_switched_off(cloud):
    tok = cloud.control.tibber_login()
    base = {"grant_type": "refresh_token", "client_id": TIBBER_CLIENT_ID,
            "client_secret": TIBBER_CLIENT_SECRET}
    r = form(cloud, "/connect/token", {**base, "refresh_token": tok["refresh_token"]})
    new = r.json()
    assert r.status == 200 and new["refresh_token"] != tok["refresh_token"]
    r = form(cloud, "/connect/token", {**base, "refresh_token": tok["refresh_token"]})
    assert r.status == 400 and r.json()["error"] == "invalid_grant"
    assert cloud.control.stats()["refresh_reuse"] == 1
    r = form(cloud, "/connect/token", {"grant_type": "refresh_token",
                                       "refresh_token": new["refresh_token"]})
    assert r.status == 401  # client credentials are required for refresh too
    cloud.control.config(tibber_refresh_returns_new_token=False)
    for _ in range(2):
        r = form(cloud, "/connect/token", {**base, "refresh_token": new["refresh_token"]})
        assert r.status == 200 and "refresh_token" not in r.json()
    assert cloud.control.tokens()["tibber"]["live_refresh_tokens"] == [new["refresh_token"]]


# ------------------------------------------------------------------ Tibber API

def test_tibber_api_serves_homes_devices_and_details_with_shared_vehicle(cloud):
    token = cloud.control.tibber_login()["access_token"]
    data = cloud.control.data()["tibber"]
    homes = api(cloud, "/v1/homes", token).json()
    assert homes == {"homes": data["homes"]} and len(data["homes"]) == 2
    h1, h2 = (h["id"] for h in data["homes"])
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", h1)
    devices = {h: api(cloud, f"/v1/homes/{h}/devices", token).json()["devices"] for h in (h1, h2)}
    assert devices == {h: data["devices"][h] for h in (h1, h2)}
    assert all(len(d) == 5 for d in devices.values())
    shared = set(d["id"] for d in devices[h1]) & set(d["id"] for d in devices[h2])
    assert shared == {"dm9sa3N3YWdlbiBlbm9kZSB2ZWhpY2xlOjEyMw"}
    for d in devices[h1]:
        assert set(d) == {"id", "externalId", "info", "supportedHistory"}
        assert re.fullmatch(r"[A-Za-z0-9_-]+", d["id"])
        r = api(cloud, f"/v1/homes/{h1}/devices/{d['id']}", token)
        assert r.status == 200 and r.json() == data["details"][d["id"]]
    details = data["details"].values()
    caps = [c for d in details for c in d["capabilities"]]
    assert {type(c["value"]) for c in caps} >= {int, float, str, bool, type(None)}
    assert any(c.get("unit") == "" for c in caps) and any("unit" not in c for c in caps)
    assert any("°C" == c.get("unit") for c in caps)
    assert any("firmware" in d for d in details)
    assert any("status" in a for d in details for a in d["attributes"])


def history_pages(cloud, token, path, **query):
    """Follows the next links from @path with @query; -> the pages."""
    pages = [api(cloud, path + "?" + urllib.parse.urlencode(query), token).json()]
    while pages[-1]["next"]:
        link = urllib.parse.urlsplit(pages[-1]["next"])
        assert f"https://{link.netloc}" == cloud.url
        pages.append(api(cloud, f"{link.path}?{link.query}", token).json())
    return pages


def test_tibber_history_pages_follow_next_cover_the_window_and_clamp_to_retention(cloud):
    data = cloud.control.data()["tibber"]
    home = data["homes"][0]["id"]
    charger = next(d for d in data["details"].values() if d["info"]["brand"] == "Easee")
    assert charger["supportedHistory"] == {"resolutions": ["hour", "day", "month"],
                                           "maxRetentionDays": 90}
    path = f"/v1/homes/{home}/devices/{charger['id']}/history"
    now = cloud.control.clock()["now_s"]
    cloud.control.advance_clock((10 * 3600 - now % 86400) % 86400)  # 10:00, far from midnight
    now = cloud.control.clock()["now_s"]
    # The login after the clock moved (up to 24 h): an access token lives an hour.
    token = cloud.control.tibber_login()["access_token"]
    day = int(now) // 86400 * 86400 - 86400  # yesterday, whole
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(day))
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(day + 86400))
    cloud.control.reset_stats()
    pages = history_pages(cloud, token, path, resolution="hour", since=since, until=until)
    points = [p for page in pages for p in page["data"]]
    assert len(pages) == 3 and all(len(p["data"]) <= 10 for p in pages)  # 24 points
    assert [p["from"] for p in points] == [
        time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(day + 3600 * i)) for i in range(24)]
    assert all(a["to"] == b["from"] for a, b in zip(points, points[1:]))
    assert set(points[0]["metrics"]) == {"energyCharged"}
    assert pages[0]["query"]["resolution"] == "hour" and pages[-1]["next"] is None
    calls = cloud.control.stats()["tibber_history_calls"]
    assert len(calls) == 3 and [c["points"] for c in calls] == [10, 10, 4]
    # The same window again: the same points (history is immutable).
    again = history_pages(cloud, token, path, resolution="hour", since=since, until=until)
    assert [p for page in again for p in page["data"]] == points
    # Seconds are cut, and a window older than the retention is clamped to it.
    page = api(cloud, path + "?resolution=day&since=2000-01-01T00:00:59Z", token).json()
    start = page["query"]["effectiveStart"]
    assert abs(iso_s(start) - (now - 90 * 86400)) < 60
    assert all(iso_s(p["from"]) >= iso_s(start) for p in page["data"])
    # Backward, with until only: prev links.
    back = api(cloud, path + "?resolution=hour&until=" + until, token).json()
    assert back["next"] is None and back["prev"] and back["data"][-1]["to"].startswith(until[:19])
    for bad in ("resolution=quarterHour", "resolution=hour&since=yesterday"):
        assert api(cloud, f"{path}?{bad}", token).status == 400
    vehicle = "dm9sa3N3YWdlbiBlbm9kZSB2ZWhpY2xlOjEyMw"
    r = api(cloud, f"/v1/homes/{home}/devices/{vehicle}/history?resolution=hour", token)
    assert r.status == 400


def test_the_date_header_tells_the_emulators_clock(cloud):
    cloud.control.advance_clock(3 * 86400)
    r = cloud.control.request("GET", "/v1/homes", headers=UA)
    date = email.utils.parsedate_to_datetime(r.headers["Date"]).timestamp()
    assert abs(date - cloud.control.clock()["now_s"]) < 2


def iso_s(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_tibber_api_errors_401_404_and_no_single_home_endpoint(cloud):
    r = cloud.control.request("GET", "/v1/homes", headers={**UA, "Authorization": "Bearer x"})
    assert r.status == 401 and r.json()["status"] == 401
    token = cloud.control.tibber_login()["access_token"]
    home = cloud.control.data()["tibber"]["homes"][0]["id"]
    for path in (f"/v1/homes/{home}", "/v1/homes/nope/devices", f"/v1/homes/{home}/devices/nope"):
        r = api(cloud, path, token)
        assert r.status == 404, path
        assert r.headers["Content-Type"].startswith("application/problem+json")
        assert set(r.json()) == {"type", "title", "status", "detail"}
    cloud.control.expire_tokens()
    assert api(cloud, "/v1/homes", token).status == 401


def test_tibber_api_requires_user_agent_and_records_it(cloud):
    token = cloud.control.tibber_login()["access_token"]
    r = cloud.control.request("GET", "/v1/homes", headers={"Authorization": f"Bearer {token}"})
    assert r.status == 400 and r.headers["Content-Type"].startswith("application/problem+json")
    api(cloud, "/v1/homes", token, {"User-Agent": "smarthomefs/0.1.0 (test)"})
    stats = cloud.control.stats()
    assert "smarthomefs/0.1.0 (test)" in stats["user_agents"]
    assert stats["requests_without_user_agent"] >= 1


def test_tibber_devices_of_ungranted_categories_are_hidden(cloud):
    token = cloud.control.tibber_login(scope="openid offline_access data-api-user-read "
                                             "data-api-chargers-read")["access_token"]
    data = cloud.control.data()["tibber"]
    home = data["homes"][0]["id"]
    listed = api(cloud, f"/v1/homes/{home}/devices", token).json()["devices"]
    assert [d["info"]["brand"] for d in listed] == ["Easee"]
    vehicle = "dm9sa3N3YWdlbiBlbm9kZSB2ZWhpY2xlOjEyMw"
    assert api(cloud, f"/v1/homes/{home}/devices/{vehicle}", token).status == 404


def test_tibber_devices_carry_units_online_and_last_seen_as_the_docs_show(cloud):
    details = cloud.control.data()["tibber"]["details"]
    vehicle = details["dm9sa3N3YWdlbiBlbm9kZSB2ZWhpY2xlOjEyMw"]
    caps = {c["id"]: c for c in vehicle["capabilities"]}
    assert caps["storage.stateOfCharge"]["unit"] == "%" and caps["range.remaining"]["unit"] == "m"
    assert "unit" not in caps["connector.status"]  # an enum: tibber.md's example has no unit
    assert vehicle["attributes"][1] == {"id": "isOnline", "value": True}
    for d in details.values():
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", d["status"]["lastSeen"])
        assert [a for a in d["attributes"] if a["id"] == "isOnline"], d["id"]
        for c in d["capabilities"]:
            if isinstance(c["value"], (int, float)) and not isinstance(c["value"], bool):
                assert "unit" in c, c  # every number says what it counts, "" when nothing


def test_tibber_device_going_offline_keeps_its_last_seen(cloud):
    token = cloud.control.tibber_login()["access_token"]
    home = cloud.control.data()["tibber"]["homes"][0]["id"]
    vehicle = "dm9sa3N3YWdlbiBlbm9kZSB2ZWhpY2xlOjEyMw"
    url = f"/v1/homes/{home}/devices/{vehicle}"
    before = api(cloud, url, token).json()
    cloud.control.tibber_online(vehicle, False)
    after = api(cloud, url, token).json()
    assert {"id": "isOnline", "value": False} in after["attributes"]
    assert after["status"] == before["status"]
    cloud.control.advance_clock(60)
    cloud.control.tibber_online(vehicle, True)
    back = api(cloud, url, token).json()
    assert back["status"]["lastSeen"] > before["status"]["lastSeen"]


def test_tibber_capability_change_and_device_removal(cloud):
    token = cloud.control.tibber_login()["access_token"]
    home = cloud.control.data()["tibber"]["homes"][0]["id"]
    vehicle = "dm9sa3N3YWdlbiBlbm9kZSB2ZWhpY2xlOjEyMw"
    before = api(cloud, f"/v1/homes/{home}/devices/{vehicle}", token).json()
    cloud.control.tibber_capability(vehicle, "storage.stateOfCharge", 80)
    after = api(cloud, f"/v1/homes/{home}/devices/{vehicle}", token).json()
    soc = next(c for c in after["capabilities"] if c["id"] == "storage.stateOfCharge")
    assert soc["value"] == 80 and after["status"]["lastSeen"] != before["status"]["lastSeen"]
    cloud.control.tibber_remove_device(vehicle)
    for h in cloud.control.data()["tibber"]["homes"]:
        ids = [d["id"] for d in api(cloud, f"/v1/homes/{h['id']}/devices", token).json()["devices"]]
        assert vehicle not in ids
    assert api(cloud, f"/v1/homes/{home}/devices/{vehicle}", token).status == 404
    with pytest.raises(urllib.error.HTTPError) as e:
        cloud.control.tibber_remove_device(vehicle)
    assert e.value.code == 404


def test_tibber_add_home_lists_many_devices_and_pads_their_details(cloud):
    token = cloud.control.tibber_login()["access_token"]
    many = cloud.control.tibber_add_home(3000)
    big = cloud.control.tibber_add_home(2, detail_bytes=2_000_000)
    homes = [h["id"] for h in api(cloud, "/v1/homes", token).json()["homes"]]
    assert homes[-2:] == [many, big]
    listing = api(cloud, f"/v1/homes/{many}/devices", token)
    devices = listing.json()["devices"]
    assert len(devices) == 3000 and len({d["id"] for d in devices}) == 3000
    # Short entries: 100 000 of them stay under a client's 16 MiB body cap.
    assert len(listing.body) * 100_000 / 3000 < 16 << 20
    small = api(cloud, f"/v1/homes/{many}/devices/{devices[0]['id']}", token).json()
    assert small["info"] == devices[0]["info"] and small["capabilities"]
    entry = api(cloud, f"/v1/homes/{big}/devices", token).json()["devices"][0]
    padded = api(cloud, f"/v1/homes/{big}/devices/{entry['id']}", token)
    assert 1_900_000 < len(padded.body) < 2_100_000
    detail = padded.json()
    assert {"id": "isOnline", "value": True} in detail["attributes"]
    assert detail["id"] == entry["id"] and detail["capabilities"]


# ------------------------------------------------------------------ faults, latency, stats

def test_fault_status_codes_count_down_and_match_path(cloud):
    token = tado_token(cloud)
    cloud.control.config(retry_after="5")
    cloud.control.fail(kind="503", count=2, path="/zoneStates")
    assert api(cloud, "/api/v2/me", token).status == 200
    for _ in range(2):
        r = api(cloud, "/api/v2/homes/1001/zoneStates", token)
        assert r.status == 503 and r.headers["Retry-After"] == "5"
    assert api(cloud, "/api/v2/homes/1001/zoneStates", token).status == 200
    for kind in ("500", "502"):
        cloud.control.fail(kind=kind)
        assert api(cloud, "/api/v2/me", token).status == int(kind)
    cloud.control.fail(kind="429")
    r = cloud.control.request("GET", "/v1/homes", headers=UA)
    assert r.status == 429 and r.body == b"" and r.headers["Retry-After"] == "5"
    cloud.control.fail(kind="500", count=-1, path="/oauth2/token")
    for _ in range(3):
        assert poll(cloud, "x").status == 500
    cloud.control.clear_faults()
    assert poll(cloud, "x").status == 400
    assert cloud.control.faults() == []


def test_fault_drop_malformed_truncated_and_empty(cloud):
    token = tado_token(cloud)
    cloud.control.fail(kind="drop")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        api(cloud, "/api/v2/me", token)
    cloud.control.fail(kind="malformed")
    r = api(cloud, "/api/v2/me", token)
    assert r.status == 200 and r.body == b'{"not json'
    cloud.control.fail(kind="empty")
    r = api(cloud, "/api/v2/me", token)
    assert r.status == 200 and r.body == b"" and r.headers["Content-Length"] == "0"
    cloud.control.fail(kind="truncated")
    with pytest.raises(http.client.IncompleteRead):
        api(cloud, "/api/v2/me", token)
    assert cloud.control.stats()["status_counts"]["drop"] == 1


def test_fault_stall_hangs_until_the_client_gives_up(cloud):
    cloud.control.fail(kind="stall")
    t0 = time.monotonic()
    with pytest.raises((TimeoutError, socket.timeout)):
        cloud.control.request("GET", "/v1/homes", headers=UA, timeout=0.5)
    assert 0.4 < time.monotonic() - t0 < 3


def test_fault_huge_streams_100_mib_of_json(cloud):
    cloud.control.fail(kind="huge")
    ctx = ssl.create_default_context(cafile=cloud.cafile)
    conn = http.client.HTTPSConnection("127.0.0.1", cloud.port, context=ctx, timeout=5)
    conn.request("GET", "/v1/homes", headers=UA)
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("Content-Length") == str(100 * 1024 * 1024)
    assert r.read(1 << 20).startswith(b'{"homes":[{"id":"huge","name":"xxx')
    conn.close()
    assert cloud.control.stats()["status_counts"]["200"] >= 1  # server still alive


def test_fault_nested_and_hostile_ids(cloud):
    token = tado_token(cloud)
    cloud.control.fail(kind="nested")
    body = api(cloud, "/api/v2/homes/1001/zones", token).body
    assert body.startswith(b"[" * 100000) and len(body) == 200000
    cloud.control.fail(kind="badids", count=-1)
    me = api(cloud, "/api/v2/me", token).body
    assert b"\xff" in me
    homes = json.loads(me.decode("utf-8", "replace"))["homes"]
    ids = [h["id"] for h in homes]
    assert {"..", "a/b", "", "x" * 300} <= set(ids) and ids.count(1001) == 2
    zones = json.loads(api(cloud, "/api/v2/homes/1001/zones", token).body.decode("utf-8", "replace"))
    assert isinstance(zones, list) and {"..", "a/b"} <= {z["id"] for z in zones}
    states = api(cloud, "/api/v2/homes/1001/zoneStates", token).body
    assert states.count(b'"1":') == 2  # duplicate keys
    devs = json.loads(cloud.control.request("GET", "/v1/homes/x/devices", headers=UA)
                      .body.decode("utf-8", "replace"))["devices"]
    assert {"..", "a/b", ""} <= {d["id"] for d in devs}


def test_latency_is_added_to_api_answers(cloud):
    cloud.control.latency(300)
    t0 = time.monotonic()
    cloud.control.request("GET", "/v1/homes", headers=UA)
    assert time.monotonic() - t0 >= 0.3
    cloud.control.latency(0)


def test_stats_count_requests_by_method_and_path_and_reset(cloud):
    token = tado_token(cloud)
    api(cloud, "/api/v2/homes/1001/zoneStates?foo=bar", token)
    api(cloud, "/api/v2/homes/1001/zoneStates", token)
    stats = cloud.control.stats()
    assert stats["requests"]["GET /api/v2/homes/1001/zoneStates"] == 2
    assert stats["requests"]["POST /oauth2/token"] == 1
    assert not any(k.split()[1].startswith("/_control") for k in stats["requests"])
    assert stats["status_counts"]["200"] >= 3 and UA["User-Agent"] in stats["user_agents"]
    cloud.control.reset_stats()
    assert cloud.control.stats()["requests"] == {}


def test_log_has_one_line_per_request_and_no_secrets(server):
    tado = server.control.tado_login()
    tibber = server.control.tibber_login()
    secrets_seen = [tado["access_token"], tado["refresh_token"], tibber["access_token"],
                    tibber["refresh_token"], TIBBER_CLIENT_SECRET, "code="]
    server.control.request("GET", "/api/v2/me?secret=shh",
                           headers={"Authorization": "Bearer " + tado["access_token"]})
    time.sleep(0.05)
    log = server.log()
    assert "GET /api/v2/me 200" in log and "shh" not in log
    for s in secrets_seen:
        assert s not in log
