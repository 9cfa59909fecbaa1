#!/usr/bin/python3
"""Emulated tado + Tibber clouds for smarthomefs tests.

One HTTPS server (HTTP/1.1, keep-alive) serves, on the real paths:
  /oauth2/...   tado login (device authorization grant, RFC 8628)
  /api/v2/...   tado REST API (bearer auth, per-account daily quota)
  /connect/...  Tibber OIDC login (authorization code + PKCE)
  /v1/...       Tibber Data API
  /_control/... test control interface (JSON, no auth)

Python standard library only. See README.md for the options and control API.
"""

import argparse
import base64
import datetime
import email.utils
import hashlib
import hmac
import html
import http.server
import json
import math
import os
import re
import secrets
import select
import signal
import socket
import ssl
import string
import sys
import threading
import time
import urllib.parse
import uuid
import zoneinfo

TADO_CLIENT_ID = "1bb50063-6b0c-4d11-bd99-387f4a91cc46"
TADO_USER_ID = "5d4c8a1e2f3b7a6c9e0d1f2a"
# A second tado user, a member of no home until invited to one (/_control/tado/invite):
# tado lets a home's user invite others by e-mail, who then see that home with their own
# login (README: "Two users of one home").
TADO_SECOND_USER_ID = "6e5d9b2f3a4c8b7d0f1e2a3b"
TIBBER_USER_ID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
BASE_TIME = 1767258000  # 2026-01-01T09:00:00Z: fixed, so the dataset is deterministic
CODE_TTL = 60  # Tibber authorization codes
HUGE_SIZE = 100 * 1024 * 1024
FAULT_KINDS = ("500", "502", "503", "429", "drop", "malformed", "truncated", "empty",
               "stall", "huge", "nested", "badids")
TIBBER_SCOPES = ("openid", "profile", "email", "offline_access", "data-api-user-read",
                 "data-api-homes-read", "data-api-vehicles-read", "data-api-chargers-read",
                 "data-api-thermostats-read", "data-api-energy-systems-read",
                 "data-api-inverters-read", "data-api-meters-read")
CATEGORY_SCOPE = {"vehicle": "data-api-vehicles-read", "charger": "data-api-chargers-read",
                  "battery": "data-api-energy-systems-read",
                  "thermostat": "data-api-thermostats-read"}
TADO_JSON = "application/json;charset=UTF-8"
TIBBER_JSON = "application/json; charset=utf-8"
PROBLEM_JSON = "application/problem+json; charset=utf-8"
HTML = "text/html; charset=utf-8"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# The emulator's one wall clock. Tests move it forward through /_control/clock to cross
# a refresh token's 30 days or the quota's reset without waiting; everything that asks
# "what time is it" in the emulated clouds asks now(). Guarded by World.lock.
_clock_offset_s = 0.0


def now():
    """Unix seconds on the emulator's clock: real time plus what /_control/clock added."""
    return time.time() + _clock_offset_s


def advance_clock(seconds):
    global _clock_offset_s
    _clock_offset_s += seconds


def reset_clock():
    global _clock_offset_s
    _clock_offset_s = 0.0


def iso(ts):
    """Unix time -> '2026-01-01T09:00:00.000Z'."""
    ms = int(round(ts * 1000))
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


def temp(celsius):
    return {"celsius": celsius, "fahrenheit": round(celsius * 9 / 5 + 32, 2)}


def as_int(text):
    """Path segment -> int, or None unless it is plain ASCII digits."""
    return int(text) if text.isascii() and text.isdigit() else None


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims):
    """A JWT-shaped opaque token (signature is random: nobody verifies it)."""
    head = b64url(json.dumps({"alg": "RS256", "kid": "emulator", "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims, separators=(",", ":")).encode())
    return f"{head}.{body}.{b64url(secrets.token_bytes(256))}"


def digits(*key, n=10):
    """Deterministic decimal digits derived from key."""
    h = int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "big")
    return str(h % 10 ** n).zfill(n)


# ---------------------------------------------------------------- HTTP plumbing

class Response:
    """What a handler answers. Special fault shapes use the extra fields."""

    def __init__(self, status, body=b"", ctype=None, headers=None):
        self.status = status
        self.body = body
        self.headers = ([("Content-Type", ctype)] if ctype else []) + list(headers or [])
        self.declared_length = None  # Content-Length to announce when != len(body)
        self.stream = None           # iterable of bytes instead of body
        self.after = None            # None | "close" | "stall"
        self.drop = False            # close without answering


def json_response(status, obj, ctype="application/json", headers=None):
    return Response(status, json.dumps(obj, ensure_ascii=False).encode(), ctype, headers)


def html_response(status, title, body_html):
    page = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title></head>\n<body>\n{body_html}\n</body></html>\n")
    return Response(status, page.encode(), HTML)


def redirect(location):
    return Response(302, b"", None, [("Location", location), ("Cache-Control", "no-store")])


def add_query(url, params):
    return url + ("&" if "?" in url else "?") + urllib.parse.urlencode(params)


class Request:
    def __init__(self, method, target, headers, body):
        split = urllib.parse.urlsplit(target)
        self.method = method
        self.path = split.path or "/"
        self.query = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
        self.headers = headers
        self.body = body
        ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        self.form = {}
        if body and ctype in ("", "application/x-www-form-urlencoded"):
            self.form = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace"),
                                                    keep_blank_values=True))
        self.base = "https://" + (headers.get("Host") or "127.0.0.1")
        self.user_agent = headers.get("User-Agent")
        auth = headers.get("Authorization") or ""
        self.bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None

    def params(self):
        """Query string and form body merged (the form wins)."""
        return {**self.query, **self.form}

    def json(self):
        if not self.body:
            return {}
        obj = json.loads(self.body)
        if not isinstance(obj, dict):
            raise ValueError("JSON object expected")
        return obj


class Router:
    """A small route table: ("GET", "/api/v2/homes/{home}", fn)."""

    def __init__(self, routes):
        self.routes = []
        for method, pattern, fn in routes:
            parts = []
            for seg in pattern.split("/"):
                m = re.fullmatch(r"\{(\w+)\}", seg)
                parts.append(f"(?P<{m.group(1)}>[^/]+)" if m else re.escape(seg))
            self.routes.append((method, re.compile("^" + "/".join(parts) + "$"), fn))

    def match(self, method, path):
        """-> (fn, params), (None, "method") if only the method is wrong, (None, None)."""
        wrong_method = False
        for m, rx, fn in self.routes:
            hit = rx.match(path)
            if hit:
                if m == method:
                    return fn, {k: urllib.parse.unquote(v) for k, v in hit.groupdict().items()}
                wrong_method = True
        return None, ("method" if wrong_method else None)


# ---------------------------------------------------------------- shared state

class Tokens:
    """Access and refresh tokens of one cloud."""

    def __init__(self):
        self.access = {}    # token -> {"exp": unix time, "scope": [...]}
        self.refresh = {}   # live token -> {"scope": [...]}
        self.spent = []     # used in a rotation
        self.revoked = []   # killed by /_control/revoke_refresh_tokens
        self.expired = []   # presented after their lifetime ran out

    def issue_access(self, ttl, scope, claims):
        now_s = now()
        token = make_jwt({**claims, "iat": int(now_s), "exp": int(now_s + ttl),
                          "jti": secrets.token_hex(8)})
        self.access[token] = {"exp": now_s + ttl, "scope": list(scope),
                              "user": claims.get("sub")}
        return token

    def check_access(self, token):
        rec = self.access.get(token) if token else None
        if rec is None or rec["exp"] <= now():
            return None
        return rec

    def issue_refresh(self, scope, ttl=None, user=None):
        """A new refresh token (of @user); with ttl (seconds) it dies that long after
        issue."""
        token = secrets.token_urlsafe(48)
        self.refresh[token] = {"scope": list(scope), "user": user,
                               "exp": None if ttl is None else now() + ttl}
        return token

    def take_refresh(self, token, rotate=True):
        """The live record for token (spent at once when rotating), or None (also when
        its lifetime ran out: then it is gone for good)."""
        rec = self.refresh.get(token) if token else None
        if rec is not None and rec["exp"] is not None and rec["exp"] <= now():
            del self.refresh[token]
            self.expired.append(token)
            return None
        if rec is not None and rotate:
            del self.refresh[token]
            self.spent.append(token)
        return rec

    def expire_all(self):
        for rec in self.access.values():
            rec["exp"] = min(rec["exp"], now() - 1)

    def revoke_all_refresh(self):
        self.revoked.extend(self.refresh)
        self.refresh.clear()

    def summary(self):
        now_s = now()
        return {"live_refresh_tokens": list(self.refresh), "spent_refresh_tokens": list(self.spent),
                "revoked_refresh_tokens": list(self.revoked),
                "expired_refresh_tokens": list(self.expired),
                "live_access_tokens": sum(1 for r in self.access.values() if r["exp"] > now_s),
                "access_tokens": list(self.access)}


class Stats:
    def __init__(self):
        self.requests = {}
        self.token_requests = {"device_authorize": 0, "device_code": 0, "refresh_token": 0,
                               "authorization_code": 0}
        self.token_requests_by_cloud = {"tado": {}, "tibber": {}}
        self.refresh_reuse = 0
        self.refresh_expired = 0
        self.status_counts = {}
        self.user_agents = []
        self.requests_without_user_agent = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections = 0  # TLS connections that carried a cloud request
        self.tls_resumed = 0  # of which resumed an earlier TLS session
        self.too_many = {}    # 429 answers by the tado quota window's start ("other": not tado)
        self.history = []     # Tibber history calls: device, resolution, since, until, points
        self.tado_api_by_user = {}  # tado API requests with a valid token: "first"/"second"
        self.day_reports = {}  # tado dayReport requests by "home/zone/date" (any answer)

    def request(self, req):
        key = f"{req.method} {req.path}"
        self.requests[key] = self.requests.get(key, 0) + 1
        if req.user_agent is None:
            self.requests_without_user_agent += 1
        elif req.user_agent not in self.user_agents:
            self.user_agents.append(req.user_agent)

    def rate_limited(self, window_start):
        key = window_start or "other"
        self.too_many[key] = self.too_many.get(key, 0) + 1

    def history_call(self, device, resolution, since, until, points):
        self.history.append({"device": device, "resolution": resolution, "since": since,
                             "until": until, "points": points})

    def status(self, status):
        self.status_counts[status] = self.status_counts.get(status, 0) + 1

    def day_report(self, key):
        self.day_reports[key] = self.day_reports.get(key, 0) + 1

    def token(self, cloud, kind):
        self.token_requests[kind] = self.token_requests.get(kind, 0) + 1
        per = self.token_requests_by_cloud[cloud]
        per[kind] = per.get(kind, 0) + 1

    def as_json(self):
        return {"requests": self.requests, "token_requests": self.token_requests,
                "token_requests_by_cloud": self.token_requests_by_cloud,
                "refresh_reuse": self.refresh_reuse, "refresh_expired": self.refresh_expired,
                "status_counts": self.status_counts,
                "user_agents": self.user_agents,
                "requests_without_user_agent": self.requests_without_user_agent,
                "in_flight": self.in_flight, "max_in_flight": self.max_in_flight,
                "connections": self.connections, "tls_resumed": self.tls_resumed,
                "too_many_requests_by_window": self.too_many,
                "tibber_history_calls": self.history,
                "tado_api_by_user": self.tado_api_by_user,
                "day_reports": self.day_reports}


# ---------------------------------------------------------------- tado

ZONE_NAMES = ["Living Room", "Bedroom", "Kitchen", "Bathroom", "Office", "Kids Room",
              "Dining Room", "Guest Room", "Hallway", "Attic"]


def tado_error(status, code, title, headers=None):
    return json_response(status, {"errors": [{"code": code, "title": title}]}, TADO_JSON, headers)


def oauth_error(status, error, description, ctype="application/json", **extra):
    return json_response(status, {"error": error, "error_description": description, **extra},
                         ctype)


def spring_error(status, error, path):
    """hops.tado.com's error body: Spring Boot's default (node-red-contrib-tado-client #83)."""
    t = now()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03d+00:00" % (
        int(t * 1000) % 1000)
    return json_response(status, {"timestamp": stamp, "status": status, "error": error,
                                  "path": path}, "application/json")


class Tado:
    """tado: login.tado.com (/oauth2), my.tado.com (/api/v2) and, for tado X homes,
    hops.tado.com (here under /hops)."""

    def __init__(self, world):
        self.world = world
        self.opts = world.opts
        self.tokens = Tokens()
        self.device_codes = {}   # device_code -> record
        self.user_codes = {}     # user_code -> device_code
        self.window = None       # the quota window's index (see window_index)
        self.used = 0            # one count for every user: stricter than tado's own
        self.login_user = TADO_USER_ID  # who approves the next device codes
        self.user = TADO_USER_ID        # whose token the request being handled carries
        self.build()
        self.auth_router = Router([
            ("POST", "/oauth2/device_authorize", self.device_authorize),
            ("POST", "/oauth2/token", self.token),
            ("GET", "/oauth2/device", self.device_page),
            ("POST", "/oauth2/device", self.device_decision),
        ])
        self.api_router = Router([
            ("GET", "/api/v2/me", self.api_me),
            ("GET", "/api/v2/homes/{home}", self.api_home),
            ("GET", "/api/v2/homes/{home}/state", self.api_state),
            ("GET", "/api/v2/homes/{home}/weather", self.api_weather),
            ("GET", "/api/v2/homes/{home}/zones", self.api_zones),
            ("GET", "/api/v2/homes/{home}/zoneStates", self.api_zone_states),
            ("GET", "/api/v2/homes/{home}/zones/{zone}/state", self.api_zone_state),
            ("GET", "/api/v2/homes/{home}/devices", self.api_devices),
            ("GET", "/api/v2/homes/{home}/deviceList", self.api_device_list),
            ("GET", "/api/v2/homes/{home}/mobileDevices", self.api_mobile_devices),
            ("GET", "/api/v2/devices/{serial}", self.api_device),
            ("GET", "/api/v2/homes/{home}/zones/{zone}/dayReport", self.api_day_report),
            # hops.tado.com: the same bearer token, the same daily quota (tado.md)
            ("GET", "/hops/homes/{home}", self.hops_home),
            ("GET", "/hops/homes/{home}/rooms", self.hops_rooms),
            ("GET", "/hops/homes/{home}/rooms/{room}", self.hops_room),
            ("GET", "/hops/homes/{home}/roomsAndDevices", self.hops_rooms_and_devices),
        ])

    # ---- dataset

    def build(self):
        o = self.opts
        self.homes = {}      # id -> home record
        self.devices = {}    # serialNo -> device object (as served)
        # user id -> profile and the homes it is a member of (None: every home)
        self.users = {TADO_USER_ID: {"name": "Test User", "email": "test.user@example.com",
                                     "homes": None},
                      TADO_SECOND_USER_ID: {"name": "Second User",
                                            "email": "second.user@example.com",
                                            "homes": set()}}
        for hi in range(o.tado_homes):
            hid = 1001 + hi
            self.homes[hid] = self.build_home(hid, hi, o.tado_zones, o.tado_devices)
        for xi in range(o.tado_x_homes):
            hi = o.tado_homes + xi
            self.homes[1001 + hi] = self.build_x_home(1001 + hi, hi, o.tado_x_rooms)

    def build_x_home(self, hid, hi, nrooms):
        """A tado X home: my.tado.com knows the home, its state and weather, but lists no
        zones and no devices; its rooms and devices live on hops.tado.com."""
        h = self.build_home(hid, hi, 0, 0)
        h["home"].update(generation="LINE_X", zonesCount=0)
        h["home"]["incidentDetection"] = {"supported": False, "enabled": True}
        rooms, room_states = [], {}
        for ri in range(nrooms):
            rid = ri + 1
            name = ZONE_NAMES[ri] if ri < len(ZONE_NAMES) else f"Room {rid}"
            devices = [self.build_x_device("VA04", hid, rid, 0)]
            if rid == 1:
                devices.append(self.build_x_device("TR04", hid, rid, 1))
            rooms.append({"deviceManualControlTermination": {"durationInSeconds": None,
                                                             "type": "MANUAL"},
                          "devices": devices, "roomId": rid, "roomName": name,
                          "zoneControllerAssignable": False, "zoneControllers": []})
            room_states[rid] = self.build_room_state(hid, rid, name)
        bridge = {"connection": {"state": "CONNECTED"}, "firmwareVersion": "245.1",
                  "serialNumber": "IB" + digits("tadox", hid, "bridge"), "type": "IB02"}
        h.update(rooms=rooms, room_states=room_states, other_devices=[bridge])
        return h

    @staticmethod
    def build_x_device(dtype, hid, rid, di):
        """A tado X device as roomsAndDevices lists it (PyTado's fixture
        tests/fixtures/tadox/rooms_and_devices.json)."""
        measured = round(17.0 + ((hid * 7 + rid * 13 + di) % 40) / 10, 2)
        dev = {"batteryState": "LOW" if (hid + rid + di) % 5 == 0 else "NORMAL",
               "childLockEnabled": False, "connection": {"state": "CONNECTED"},
               "firmwareVersion": "243.1" if dtype == "VA04" else "245.1",
               "serialNumber": dtype[:2] + digits("tadox", hid, rid, di),
               "temperatureAsMeasured": measured, "temperatureOffset": 0.0, "type": dtype}
        if dtype == "VA04":
            dev["mountingState"] = "CALIBRATED"
        return dev

    @staticmethod
    def build_room_state(hid, rid, name):
        """GET /rooms: one room's state in PyTado's line_x RoomState shape (fixtures
        tests/fixtures/home_1234/tadox.heating.*.json)."""
        start = iso(BASE_TIME + 6 * 3600).replace(".000Z", "Z")
        state = {
            "id": rid, "name": name,
            "sensorDataPoints": {
                "insideTemperature": {"value": round(19.0 + ((hid * 31 + rid * 47) % 400) / 100,
                                                     2)},
                "humidity": {"percentage": 38 + (hid + rid * 7) % 20}},
            "setting": {"power": "ON", "temperature": {"value": 19.0 + (rid % 4) * 0.5}},
            "manualControlTermination": None, "boostMode": None,
            "heatingPower": {"percentage": (hid + rid * 29) % 100},
            "connection": {"state": "CONNECTED"}, "openWindow": None,
            "nextScheduleChange": {"start": start, "setting": {"power": "ON",
                                                               "temperature": {"value": 18.0}}},
            "nextTimeBlock": {"start": start}, "balanceControl": None}
        if rid == 2:  # a manual setting until the next time block (tadox.heating.manual_mode)
            state["setting"]["temperature"]["value"] = 21.0
            state["manualControlTermination"] = {"type": "NEXT_TIME_BLOCK",
                                                 "remainingTimeInSeconds": 4549,
                                                 "projectedExpiry": start}
        if rid == 3:  # heating off, a window open (tadox.heating.manual_off)
            state["setting"] = {"power": "OFF", "temperature": None}
            state["heatingPower"]["percentage"] = 0
            state["openWindow"] = {"activated": True, "expiryInSeconds": 600}
        return state

    def build_home(self, hid, hi, nzones, ndevices):
        t0 = BASE_TIME
        home = {
            "id": hid, "name": f"Home {hi + 1}", "dateTimeZone": "Europe/Berlin",
            "dateCreated": iso(t0 - 86400 * 400 - hi * 86400), "temperatureUnit": "CELSIUS",
            "partner": None, "simpleSmartScheduleEnabled": True, "awayRadiusInMeters": 400.0,
            "installationCompleted": True,
            "incidentDetection": {"supported": True, "enabled": True},
            "generation": "PRE_LINE_X", "zonesCount": nzones, "language": "de-DE",
            "preventFromSubscribing": True, "skills": [], "christmasModeEnabled": True,
            "showAutoAssistReminders": True,
            "contactDetails": {"name": "Test User", "email": "test.user@example.com",
                               "phone": "+49 30 1234567"},
            "address": {"addressLine1": f"Musterstraße {hi + 1}", "addressLine2": None,
                        "zipCode": "10115", "city": "Berlin", "state": None, "country": "DEU"},
            "geolocation": {"latitude": round(52.52 + hi * 0.01, 4),
                            "longitude": round(13.405 + hi * 0.01, 4)},
            "consentGrantSkippable": True,
            "enabledFeatures": ["EIQ_SETTINGS_AS_WEBVIEW", "HIDE_BOILER_REPAIR_SERVICE",
                                "OWD_SETTINGS_AS_WEBVIEW"],
            "isAirComfortEligible": False, "isBalanceAcEligible": False,
            "isEnergyIqEligible": True, "isHeatSourceInstalled": False,
            "isBalanceHpEligible": False,
        }
        state = {"presence": "HOME" if hi % 2 == 0 else "AWAY", "presenceLocked": hi % 2 == 0}
        weather = {
            "solarIntensity": {"type": "PERCENTAGE", "percentage": round(10 + hi * 7.5, 1),
                               "timestamp": iso(t0)},
            "outsideTemperature": {**temp(round(4.5 + hi * 1.25, 2)), "timestamp": iso(t0),
                                   "type": "TEMPERATURE",
                                   "precision": {"celsius": 0.01, "fahrenheit": 0.01}},
            "weatherState": {"type": "WEATHER_STATE", "value": "CLOUDY_PARTLY",
                             "timestamp": iso(t0)},
        }
        zones, zone_states = [], {}
        for zi in range(nzones):
            zid = zi + 1
            hot = nzones >= 3 and zid == nzones
            name = "Hot Water" if hot else (ZONE_NAMES[zi] if zi < len(ZONE_NAMES)
                                            else f"Room {zid}")
            zones.append({"id": zid, "name": name, "type": "HOT_WATER" if hot else "HEATING",
                          "dateCreated": iso(t0 - 86400 * 390 + zid * 60), "devices": []})
            zone_states[zid] = self.build_zone_state(hid, zid, hot)
        # devices: bridge, thermostat in zone 1, valves round robin over heating zones
        heating = [z for z in zones if z["type"] == "HEATING"]
        device_serials = []
        for di in range(ndevices):
            dtype = "IB01" if di == 0 else ("RU02" if di == 1 else "VA02")
            serial = dtype[:2] + digits("tado", hid, di)
            dev = self.build_device(dtype, serial, hid, di)
            self.devices[serial] = dev
            device_serials.append(serial)
            if di == 0 or not heating:
                continue
            zone = heating[0] if di == 1 else heating[(di - 2) % len(heating)]
            if dtype == "RU02":
                duties = ["ZONE_UI", "ZONE_LEADER"]
            elif not zone["devices"]:
                duties = ["ZONE_UI", "ZONE_DRIVER", "ZONE_LEADER"]
            else:
                duties = ["ZONE_DRIVER"]
            zone["devices"].append((serial, duties))
        mobile = [{
            "name": f"Phone {hi + 1}", "id": 5001 + hi,
            "settings": {"geoTrackingEnabled": hi % 2 == 0, "specialOffersEnabled": False,
                         "onDemandLogRetrievalEnabled": False,
                         "pushNotifications": {"lowBatteryReminder": True,
                                               "awayModeReminder": True,
                                               "homeModeReminder": True,
                                               "openWindowReminder": True,
                                               "energySavingsReportReminder": True,
                                               "incidentDetection": True,
                                               "energyIqReminder": False}},
            "deviceMetadata": {"platform": "Android", "osVersion": "14", "model": "Pixel-7",
                               "locale": "de"},
        }]
        return {"home": home, "state": state, "weather": weather, "zones": zones,
                "zone_states": zone_states, "devices": device_serials, "mobile": mobile}

    @staticmethod
    def build_zone_state(hid, zid, hot):
        ts = iso(BASE_TIME + zid)
        if hot:
            return {"tadoMode": "HOME", "geolocationOverride": False,
                    "geolocationOverrideDisableTime": None, "preparation": None,
                    "setting": {"type": "HOT_WATER", "power": "OFF", "temperature": None},
                    "overlayType": None, "overlay": None, "openWindow": None,
                    "nextScheduleChange": {"start": iso(BASE_TIME + 3 * 3600),
                                           "setting": {"type": "HOT_WATER", "power": "ON",
                                                       "temperature": None}},
                    "nextTimeBlock": {"start": iso(BASE_TIME + 3 * 3600)},
                    "link": {"state": "ONLINE"}, "runningOfflineSchedule": False,
                    "activityDataPoints": {}, "sensorDataPoints": {}}
        setpoint = 19.0 + (zid % 4) * 0.5
        inside = round(19.5 + ((hid * 37 + zid * 53) % 400) / 100, 2)
        humidity = round(40 + ((hid * 11 + zid * 17) % 250) / 10, 1)
        power = float((hid + zid * 29) % 100)
        return {
            "tadoMode": "HOME", "geolocationOverride": False,
            "geolocationOverrideDisableTime": None, "preparation": None,
            "setting": {"type": "HEATING", "power": "ON", "temperature": temp(setpoint)},
            "overlayType": None, "overlay": None, "openWindow": None,
            "nextScheduleChange": {"start": iso(BASE_TIME + 6 * 3600),
                                   "setting": {"type": "HEATING", "power": "ON",
                                               "temperature": temp(18.0)}},
            "nextTimeBlock": {"start": iso(BASE_TIME + 6 * 3600)},
            "link": {"state": "ONLINE"}, "runningOfflineSchedule": False,
            "activityDataPoints": {"heatingPower": {"type": "PERCENTAGE", "percentage": power,
                                                    "timestamp": ts}},
            "sensorDataPoints": {
                "insideTemperature": {**temp(inside), "timestamp": ts, "type": "TEMPERATURE",
                                      "precision": {"celsius": 0.1, "fahrenheit": 0.1}},
                "humidity": {"type": "PERCENTAGE", "percentage": humidity, "timestamp": ts}},
        }

    @staticmethod
    def build_device(dtype, serial, hid, di):
        t = BASE_TIME - 86400 * 30 + di * 3600
        dev = {"deviceType": dtype, "serialNo": serial, "shortSerialNo": serial,
               "currentFwVersion": {"IB01": "118.1", "RU02": "95.1", "VA02": "57.4"}[dtype],
               "connectionState": {"value": True, "timestamp": iso(t)}}
        if dtype == "IB01":
            dev["characteristics"] = {"capabilities": []}
            dev["inPairingMode"] = False
        elif dtype == "RU02":
            dev["characteristics"] = {"capabilities": ["INSIDE_TEMPERATURE_MEASUREMENT",
                                                       "IDENTIFY"]}
            dev["batteryState"] = "NORMAL"
        else:
            dev["characteristics"] = {"capabilities": ["INSIDE_TEMPERATURE_MEASUREMENT",
                                                       "IDENTIFY"]}
            dev["mountingState"] = {"value": "CALIBRATED", "timestamp": iso(t + 60)}
            dev["batteryState"] = "LOW" if (hid + di) % 5 == 0 else "NORMAL"
            dev["childLockEnabled"] = False
        return dev

    # ---- served bodies (also used by /_control/data)

    def visible_homes(self, user=None):
        """{id: home} of the homes @user (default: the request's) is a member of."""
        member = self.users[user or self.user]["homes"]
        return {hid: h for hid, h in self.homes.items() if member is None or hid in member}

    def body_me(self, user=None):
        user = user or self.user
        homes = self.visible_homes(user)
        mobiles = [m for h in homes.values() for m in h["mobile"]]
        profile = self.users[user]
        return {"name": profile["name"], "email": profile["email"],
                "username": profile["email"], "id": user,
                "homes": [{"id": hid, "name": h["home"]["name"]} for hid, h in homes.items()],
                "locale": "de_DE", "mobileDevices": mobiles}

    def body_zones(self, h):
        out = []
        for z in h["zones"]:
            devs = [dict(self.devices[s], duties=list(d)) for s, d in z["devices"]]
            zone = {"id": z["id"], "name": z["name"], "type": z["type"],
                    "dateCreated": z["dateCreated"],
                    "deviceTypes": sorted({d["deviceType"] for d in devs}), "devices": devs,
                    "reportAvailable": False, "showScheduleSetup": False,
                    "supportsDazzle": z["type"] == "HEATING",
                    "dazzleEnabled": z["type"] == "HEATING",
                    "dazzleMode": {"supported": z["type"] == "HEATING",
                                   "enabled": z["type"] == "HEATING"},
                    "openWindowDetection": {"supported": z["type"] == "HEATING",
                                            "enabled": True, "timeoutInSeconds": 900}}
            out.append(zone)
        return out

    def body_zone_states(self, h):
        return {"zoneStates": {str(zid): st for zid, st in h["zone_states"].items()}}

    def body_devices(self, h):
        return [self.devices[s] for s in h["devices"]]

    def body_device_list(self, h):
        where = {s: (z["id"], d) for z in h["zones"] for s, d in z["devices"]}
        entries = []
        for s in h["devices"]:
            dev = self.devices[s]
            entry = {"type": dev["deviceType"], "device": dev}
            if s in where:
                entry["zone"] = {"discriminator": where[s][0], "duties": list(where[s][1])}
            entries.append(entry)
        return {"entries": entries}

    @staticmethod
    def is_x(h):
        return h["home"]["generation"] == "LINE_X"

    @staticmethod
    def body_hops_home(h):
        """GET hops /homes/{h} (PyTado fixture tests/fixtures/home_1234/tadox.hops_homes.json)."""
        return {"roomCount": len(h["rooms"]), "isHeatSourceInstalled": False,
                "isHeatPumpInstalled": False, "supportsFlowTemperatureOptimization": False}

    @staticmethod
    def body_rooms(h):
        return [h["room_states"][r["roomId"]] for r in h["rooms"]]

    @staticmethod
    def body_rooms_and_devices(h):
        return {"otherDevices": h["other_devices"], "rooms": h["rooms"]}

    def data(self):
        homes = {}
        for hid, h in self.homes.items():
            homes[str(hid)] = {"home": h["home"], "state": h["state"], "weather": h["weather"],
                               "zones": self.body_zones(h),
                               "zoneStates": self.body_zone_states(h),
                               "devices": self.body_devices(h),
                               "deviceList": self.body_device_list(h),
                               "mobileDevices": h["mobile"]}
            if self.is_x(h):
                homes[str(hid)]["hops"] = {"home": self.body_hops_home(h),
                                           "rooms": self.body_rooms(h),
                                           "roomsAndDevices": self.body_rooms_and_devices(h)}
        return {"me": self.body_me(TADO_USER_ID), "homes": homes}

    # ---- auth (/oauth2)

    def handle_auth(self, req):
        fn, params = self.auth_router.match(req.method, req.path)
        if fn is None:
            return oauth_error(405 if params == "method" else 404, "not_found", "no such endpoint")
        return fn(req, **params)

    def device_authorize(self, req):
        self.world.stats.token("tado", "device_authorize")
        p = req.params()
        if p.get("client_id") != TADO_CLIENT_ID:
            return oauth_error(400, "invalid_client", "Invalid client_id")
        cfg = self.world.config
        now_s = now()
        device_code = secrets.token_urlsafe(32)
        alphabet = string.ascii_uppercase + string.digits
        while True:
            user_code = "".join(secrets.choice(alphabet) for _ in range(6))
            if user_code not in self.user_codes:
                break
        self.device_codes[device_code] = {
            "user_code": user_code, "scope": p.get("scope", ""),
            "expires": now_s + cfg["device_expires_in"], "interval": cfg["device_interval"],
            "last_poll": None, "user": self.login_user,
            "status": "approved" if cfg["auto_approve"] else "pending"}
        self.user_codes[user_code] = device_code
        uri = req.base + "/oauth2/device"
        return json_response(200, {
            "device_code": device_code, "expires_in": cfg["device_expires_in"],
            "interval": cfg["device_interval"], "user_code": user_code,
            "verification_uri": uri, "verification_uri_complete": f"{uri}?user_code={user_code}"})

    def token(self, req):
        p = req.params()
        grant = p.get("grant_type")
        if grant == DEVICE_GRANT:
            self.world.stats.token("tado", "device_code")
        elif grant == "refresh_token":
            self.world.stats.token("tado", "refresh_token")
        if p.get("client_id") != TADO_CLIENT_ID:
            return oauth_error(400, "invalid_client", "Invalid client_id")
        if grant == DEVICE_GRANT:
            return self.grant_device_code(p)
        if grant == "refresh_token":
            return self.grant_refresh(p)
        return oauth_error(400, "unsupported_grant_type", "Unsupported grant_type")

    def grant_device_code(self, p):
        rec = self.device_codes.get(p.get("device_code") or "")
        if rec is None or rec["status"] == "redeemed":
            return oauth_error(400, "invalid_grant", "The device_code is invalid.")
        now_s = now()
        if now_s >= rec["expires"]:
            return oauth_error(400, "expired_token", "The device_code has expired.")
        if rec["status"] == "denied":
            return oauth_error(400, "access_denied", "The user denied the request.")
        last, rec["last_poll"] = rec["last_poll"], now_s
        if rec["status"] == "pending":
            if last is not None and now_s - last < rec["interval"]:
                rec["interval"] += 5
                return oauth_error(400, "slow_down", "Polling too fast; slow down.",
                                   interval=rec["interval"])
            return oauth_error(400, "authorization_pending",
                               "The user has not yet authorized this device.")
        rec["status"] = "redeemed"
        return json_response(200, self.issue(rec["scope"], rec["user"]))

    def grant_refresh(self, p):
        token = p.get("refresh_token")
        rec = self.tokens.take_refresh(token)
        if rec is None:
            # login.tado.com is FusionAuth, whose only reason for a refresh token it
            # does not honour is refresh_token_not_found: an expired one says the same.
            if token in self.tokens.expired:
                self.world.stats.refresh_expired += 1
            else:
                self.world.stats.refresh_reuse += 1
            return oauth_error(400, "invalid_grant", "The refresh_token is invalid.",
                               error_reason="refresh_token_not_found")
        return json_response(200, self.issue(" ".join(rec["scope"]), rec["user"]))

    def issue(self, scope, user):
        ttl = self.world.config["access_ttl"]
        scopes = scope.split()
        out = {"access_token": self.tokens.issue_access(
            ttl, scopes, {"iss": "https://login.tado.com/oauth2", "sub": user,
                          "aud": "tado", "client_id": TADO_CLIENT_ID, "scope": scope}),
               "expires_in": ttl}
        if "offline_access" in scopes:
            out["refresh_token"] = self.tokens.issue_refresh(
                scopes, self.world.config["refresh_ttl"], user)
        out.update({"scope": scope, "token_type": "Bearer", "userId": user})
        return out

    def device_page(self, req):
        if "client_id" not in req.query:
            return Response(400, b"missing_client_id", "text/plain; charset=utf-8")
        code = req.query.get("user_code", "")
        esc = html.escape(code)
        return html_response(200, "tado° – Connect device", (
            f"<h1>Connect a device</h1>\n<p>Confirm the code <b id=\"user_code\">{esc}</b>.</p>\n"
            "<form method=\"post\" action=\"/oauth2/device\">\n"
            f"<input type=\"hidden\" name=\"user_code\" value=\"{esc}\">\n"
            "<button id=\"allow\" name=\"decision\" value=\"allow\">Confirm</button>\n"
            "<button id=\"deny\" name=\"decision\" value=\"deny\">Deny</button>\n</form>"))

    def device_decision(self, req):
        code = req.form.get("user_code", "")
        allow = req.form.get("decision", "allow") == "allow"
        done = self.decide(code, allow)
        if not done:
            return html_response(400, "tado° – Error", "<p>Unknown or expired code.</p>")
        return html_response(200, "tado° – Done", "<p>Device connected.</p>" if allow
                             else "<p>Request denied.</p>")

    def pending(self):
        now_s = now()
        return [uc for uc, dc in self.user_codes.items()
                if self.device_codes[dc]["status"] == "pending"
                and self.device_codes[dc]["expires"] > now_s]

    def decide(self, user_code, allow):
        """Approve/deny one pending user code (or all when None). -> list of codes."""
        codes = self.pending() if user_code is None else (
            [user_code] if user_code in self.pending() else [])
        for uc in codes:
            self.device_codes[self.user_codes[uc]]["status"] = "approved" if allow else "denied"
        return codes

    # ---- quota
    # The window is a day that starts at the account's own time of day (quota_reset_s
    # seconds after midnight UTC), not at midnight and not at the first call; the client
    # is told how many calls are left (r) but not when they refill, except in a 429 (t).

    def window_index(self, now_s):
        cfg = self.world.config
        return math.floor((now_s - cfg["quota_reset_s"]) / cfg["quota_window"])

    def window_end(self, now_s):
        cfg = self.world.config
        return cfg["quota_reset_s"] + (self.window_index(now_s) + 1) * cfg["quota_window"]

    def roll_window(self, now_s):
        k = self.window_index(now_s)
        if k != self.window:
            self.window, self.used = k, 0

    def ratelimit_headers(self, now_s, limited=False):
        cfg = self.world.config
        q, w = cfg["quota"], cfg["quota_window"]
        self.roll_window(now_s)
        live = f'"perday";r={max(0, q - self.used)}'
        if limited:
            live += f";t={max(0, math.ceil(self.window_end(now_s) - now_s))}"
        names = ("RateLimit-Policy", "RateLimit")
        if cfg["ratelimit_header_case"] == "lower":
            names = tuple(n.lower() for n in names)
        return [(names[0], f'"perday";q={q};w={w}'), (names[1], live)]

    def too_many(self, now_s):
        """A 429 of the quota: counted per window in the stats."""
        headers = self.ratelimit_headers(now_s, limited=True) + self.world.retry_after_header()
        self.world.stats.rate_limited(iso(self.window_end(now_s) - self.world.config["quota_window"]))
        return Response(429, b"", None, headers)

    # ---- API (/api/v2)

    def handle_api(self, req):
        now_s = now()
        access = self.tokens.check_access(req.bearer)
        if access is None:
            return tado_error(401, "unauthorized",
                              "Full authentication is required to access this resource",
                              self.ratelimit_headers(now_s))
        self.user = access.get("user") or TADO_USER_ID
        who = "second" if self.user == TADO_SECOND_USER_ID else "first"
        by_user = self.world.stats.tado_api_by_user
        by_user[who] = by_user.get(who, 0) + 1
        self.roll_window(now_s)
        if self.used >= self.world.config["quota"]:
            return self.too_many(now_s)
        self.used += 1
        fn, params = self.api_router.match(req.method, req.path)
        if fn is None:
            if params == "method":
                resp = tado_error(405, "methodNotAllowed", "method not allowed")
            else:
                resp = tado_error(404, "notFound", "resource not found")
        else:
            try:
                resp = fn(req.query, **params) if getattr(fn, "takes_query", False) \
                    else fn(**params)
            except NotFound as e:  # a 403 or 404 carries the budget as every answer does
                resp = e.response
        resp.headers += self.ratelimit_headers(now_s)
        return resp

    def home_or_404(self, home):
        """The home, or the error tado answers: a numeric id that is not one of the
        account's homes is 403 accessDenied (tado_ce #1, ckuburlis/homebridge-tado #20),
        anything else 404."""
        hid = as_int(home)
        h = self.visible_homes().get(hid)
        if h is None and hid is not None:
            raise NotFound(tado_error(403, "accessDenied",
                                      f"current user is not allowed to access home {hid}"))
        if h is None:
            raise NotFound(tado_error(404, "notFound", f"home {home} not found"))
        return h

    def hops_home_or_error(self, home, path):
        """A tado X home on hops.tado.com, or a Spring error body: 403 for a home that is
        not the account's, 404 for a home that is not tado X (UNCONFIRMED: no public
        trace of what hops answers for a pre-X home)."""
        hid = as_int(home)
        h = self.visible_homes().get(hid)
        if h is None and hid is not None:
            raise NotFound(spring_error(403, "Forbidden", path))
        if h is None or not self.is_x(h):
            raise NotFound(spring_error(404, "Not Found", path))
        return h

    def ok(self, obj):
        return json_response(200, obj, TADO_JSON)

    def api_me(self):
        return self.ok(self.body_me())

    def api_home(self, home):
        return self.ok(self.home_or_404(home)["home"])

    def api_state(self, home):
        return self.ok(self.home_or_404(home)["state"])

    def api_weather(self, home):
        return self.ok(self.home_or_404(home)["weather"])

    def api_zones(self, home):
        return self.ok(self.body_zones(self.home_or_404(home)))

    def api_zone_states(self, home):
        return self.ok(self.body_zone_states(self.home_or_404(home)))

    def api_zone_state(self, home, zone):
        h = self.home_or_404(home)
        st = h["zone_states"].get(as_int(zone))
        if st is None:
            return tado_error(404, "notFound", f"zone {zone} not found")
        return self.ok(st)

    def api_devices(self, home):
        return self.ok(self.body_devices(self.home_or_404(home)))

    def api_device_list(self, home):
        return self.ok(self.body_device_list(self.home_or_404(home)))

    def api_mobile_devices(self, home):
        return self.ok(self.home_or_404(home)["mobile"])

    def api_device(self, serial):
        dev = self.devices.get(serial)
        if dev is not None and not any(serial in h["devices"]
                                       for h in self.visible_homes().values()):
            dev = None  # another user's device: as if there were none
        if dev is None:
            return tado_error(404, "notFound", f"device {serial} not found")
        return self.ok(dev)

    # ---- day reports (pre-X history): one zone's day in the home's time zone, 15 minutes
    # either side (PyTado tests/fixtures/history.zone_day_report.json: 2025-04-07 in
    # Europe/Berlin is 2025-04-06T21:45Z..2025-04-07T22:15Z, 99 points a quarter apart)

    def api_day_report(self, query, home, zone):
        h = self.home_or_404(home)
        self.world.stats.day_report(f"{home}/{zone}/{query.get('date', '')}")
        z = next((z for z in h["zones"] if z["id"] == as_int(zone)), None)
        if z is None:  # also every zone of a tado X home: my.tado.com lists none
            return tado_error(404, "notFound", f"zone {zone} not found")
        tz = zoneinfo.ZoneInfo(h["home"]["dateTimeZone"])
        now_s = now()
        today = datetime.datetime.fromtimestamp(now_s, tz).date()
        text = query.get("date")
        if text is None:
            day = today
        elif not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
            return tado_error(400, "invalidParameter", f"date {text!r} is not a date")
        else:
            try:
                day = datetime.date.fromisoformat(text)
            except ValueError:
                return tado_error(400, "invalidParameter", f"date {text!r} is not a date")
        if z["type"] == "HOT_WATER":
            return tado_error(422, "unsupportedOperation",
                              "day reports are not supported for zones of type HOT_WATER")
        created = datetime.datetime.fromtimestamp(parse_iso(z["dateCreated"]), tz).date()
        if day > today:
            return tado_error(422, "invalidDate", f"date {day} is in the future")
        if day < created:
            return tado_error(422, "invalidDate", f"zone {zone} did not exist on {day}")
        return self.ok(day_report(as_int(home), z, day, tz, now_s))

    api_day_report.takes_query = True

    # ---- hops.tado.com (/hops): tado X

    def hops_home(self, home):
        path = f"/homes/{home}"
        return json_response(200, self.body_hops_home(self.hops_home_or_error(home, path)))

    def hops_rooms(self, home):
        path = f"/homes/{home}/rooms"
        return json_response(200, self.body_rooms(self.hops_home_or_error(home, path)))

    def hops_room(self, home, room):
        path = f"/homes/{home}/rooms/{room}"
        st = self.hops_home_or_error(home, path)["room_states"].get(as_int(room))
        if st is None:
            return spring_error(404, "Not Found", path)
        return json_response(200, st)

    def hops_rooms_and_devices(self, home):
        path = f"/homes/{home}/roomsAndDevices"
        return json_response(200, self.body_rooms_and_devices(
            self.hops_home_or_error(home, path)))

    # ---- control helpers

    def set_zone_temperature(self, home, zone, celsius, humidity=None):
        h = self.homes.get(int(home))
        if h and self.is_x(h):
            return self.set_room_temperature(h, int(zone), celsius, humidity)
        st = h and h["zone_states"].get(int(zone))
        sensors = st and st["sensorDataPoints"]
        if not sensors or "insideTemperature" not in sensors:
            return False
        ts = iso(now())
        sensors["insideTemperature"].update(temp(float(celsius)), timestamp=ts)
        if humidity is not None:
            sensors["humidity"].update(percentage=float(humidity), timestamp=ts)
        return True

    @staticmethod
    def set_room_temperature(h, room, celsius, humidity):
        st = h["room_states"].get(room)
        if st is None:
            return False
        st["sensorDataPoints"]["insideTemperature"]["value"] = float(celsius)
        if humidity is not None:
            st["sensorDataPoints"]["humidity"]["percentage"] = humidity
        return True

    def remove_zone(self, home, zone):
        h = self.homes.get(int(home))
        if h and self.is_x(h):
            return self.remove_room(h, int(zone))
        z = h and next((z for z in h["zones"] if z["id"] == int(zone)), None)
        if not z:
            return False
        h["zones"].remove(z)
        del h["zone_states"][z["id"]]
        for serial, _ in z["devices"]:  # the zone's devices go with it
            h["devices"].remove(serial)
            del self.devices[serial]
        h["home"]["zonesCount"] = len(h["zones"])
        return True

    @staticmethod
    def remove_room(h, room):
        r = next((r for r in h["rooms"] if r["roomId"] == room), None)
        if r is None:
            return False
        h["rooms"].remove(r)  # its devices go with it
        del h["room_states"][room]
        return True


def parse_iso(text):
    """'2026-01-01T09:00:00.000Z' -> unix seconds."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def noise(*key, spread=0.1):
    """A deterministic value in [-spread, spread) for key."""
    return (int(digits(*key, n=4)) / 10000 - 0.5) * 2 * spread


QUARTER_S = 15 * 60
DAY_REPORT_MARGIN_S = 15 * 60


def local_time(day, hour, tz):
    """Unix seconds of hour o'clock on day in tz (hour may run past 24)."""
    d = day + datetime.timedelta(days=hour // 24)
    return datetime.datetime.combine(d, datetime.time(hour % 24), tz).timestamp()


def data_intervals(points, end, value_of):
    """Merges consecutive equal values of [(t, ...)] into {from, to, value} up to end."""
    out = []
    for i, p in enumerate(points):
        t_next = points[i + 1][0] if i + 1 < len(points) else end
        value = value_of(p)
        if out and out[-1]["value"] == value:
            out[-1]["to"] = iso(t_next)
        elif t_next > p[0]:
            out.append({"from": iso(p[0]), "to": iso(t_next), "value": value})
    return out


def series(time_series_type, value_type, key, items, **extra):
    return {"timeSeriesType": time_series_type, "valueType": value_type, **extra, key: items}


def day_report(hid, z, day, tz, now_s):
    """GET dayReport's body for zone z on day, as far as now_s has come: the same bytes for a
    finished day whenever asked. Shapes: PyTado PyTado/models/historic.py and its fixture
    tests/fixtures/history.zone_day_report.json; kritsel/tado-openapispec-v2 DayReport."""
    zid = z["id"]
    midnight, next_midnight = local_time(day, 0, tz), local_time(day, 24, tz)
    start = midnight - DAY_REPORT_MARGIN_S
    # today's ends at the time of the request, to the millisecond
    end = math.floor(min(next_midnight + DAY_REPORT_MARGIN_S, now_s) * 1000) / 1000
    # the schedule: 17 °C at night, warmer from 06:00 to 22:00 (local)
    day_c = 20.0 + (zid % 4) * 0.5
    blocks = [(local_time(day - datetime.timedelta(days=1), 22, tz), 17.0),
              (local_time(day, 6, tz), day_c), (local_time(day, 22, tz), 17.0),
              (local_time(day, 30, tz), day_c)]

    def setpoint(t):
        return [c for b, c in blocks if b <= t][-1]

    base = 19.0 + ((hid * 37 + zid * 53) % 200) / 100

    def inside(t):
        phase = 2 * math.pi * ((t % 86400) / 86400 - 0.4)
        return round(base + 1.2 * math.sin(phase) + noise("in", hid, zid, int(t)), 2)

    def humidity(t):
        phase = 2 * math.pi * ((t % 86400) / 86400)
        return round(0.45 + ((hid * 11 + zid * 17) % 100) / 1000 + 0.03 * math.cos(phase)
                     + noise("hum", hid, zid, int(t), spread=0.005), 3)

    def outside(t):
        phase = 2 * math.pi * ((t % 86400) / 86400 - 0.4)
        return round(4.0 + (hid % 5) + 4 * math.sin(phase) + noise("out", hid, int(t)), 2)

    def weather_state(t):
        hour = datetime.datetime.fromtimestamp(t, tz).hour
        night = hour < 7 or hour >= 19
        pick = int(digits("sky", hid, int(t) // 3600, n=2)) % 4
        return (("NIGHT_CLOUDY", "NIGHT_CLEAR", "NIGHT_CLOUDY", "NIGHT_CLEAR") if night else
                ("CLOUDY_PARTLY", "SUN", "CLOUDY_MOSTLY", "SUN"))[pick]

    points = [(t, inside(t), humidity(t)) for t in range(int(start), int(end) + 1, QUARTER_S)]
    temps = [p[1] for p in points]
    hums = [p[2] for p in points]
    heating = {"type": "HEATING", "power": "ON"}
    cuts = sorted({start, end} | {b for b, _ in blocks if start < b < end})
    stripes = [{"from": iso(a), "to": iso(b),
                "value": {"stripeType": "HOME",
                          "setting": {**heating, "temperature": temp(setpoint(a))}}}
               for a, b in zip(cuts, cuts[1:])]

    def call_for_heat(p):
        gap = setpoint(p[0]) - p[1]
        return "NONE" if gap <= 0 else "LOW" if gap < 0.5 else "MEDIUM" if gap < 1.5 else "HIGH"

    hours = [(t,) for t in range(int(start), int(end), 3600)] or [(start,)]
    slots = {}
    for hh in (4, 8, 12, 16, 20):
        t = local_time(day, hh, tz)
        slots[f"{hh:02d}:00"] = ({"state": weather_state(t), "temperature": temp(outside(t))}
                                  if t <= end else None)
    return {
        "zoneType": z["type"],
        "interval": {"from": iso(start), "to": iso(end)},
        "hoursInDay": round((next_midnight - midnight) / 3600),
        "measuredData": {
            "measuringDeviceConnected": series(
                "dataIntervals", "boolean", "dataIntervals",
                [{"from": iso(start), "to": iso(end), "value": True}]),
            "insideTemperature": series(
                "dataPoints", "temperature", "dataPoints",
                [{"timestamp": iso(t), "value": temp(c)} for t, c, _ in points],
                min=temp(min(temps)), max=temp(max(temps))),
            "humidity": series(
                "dataPoints", "percentage", "dataPoints",
                [{"timestamp": iso(t), "value": u} for t, _, u in points],
                percentageUnit="UNIT_INTERVAL", min=min(hums), max=max(hums)),
        },
        "stripes": series("dataIntervals", "stripes", "dataIntervals", stripes),
        "settings": series("dataIntervals", "heatingSetting", "dataIntervals",
                           [{**s, "value": s["value"]["setting"]} for s in stripes]),
        "callForHeat": series("dataIntervals", "callForHeat", "dataIntervals",
                              data_intervals(points, end, call_for_heat)),
        "weather": {
            "condition": series(
                "dataIntervals", "weatherCondition", "dataIntervals",
                data_intervals(hours, end, lambda p: {"state": weather_state(p[0]),
                                                      "temperature": temp(outside(p[0]))})),
            "sunny": series("dataIntervals", "boolean", "dataIntervals",
                            data_intervals(hours, end, lambda p: weather_state(p[0]) == "SUN")),
            "slots": series("slots", "weatherCondition", "slots", slots),
        },
    }


class NotFound(Exception):
    """Raised by lookups; carries the ready 404 response."""

    def __init__(self, response):
        super().__init__("not found")
        self.response = response


# ---------------------------------------------------------------- Tibber

def problem(status, title, detail, headers=None):
    return json_response(status, {"type": f"https://httpstatuses.io/{status}", "title": title,
                                   "status": status, "detail": detail}, PROBLEM_JSON, headers)


def device_id(text):
    return b64url(text.encode())


class Tibber:
    """Tibber: thewall.tibber.com (/connect) and data-api.tibber.com (/v1)."""

    KINDS = ("charger", "battery", "thermostat", "vehicle")

    def __init__(self, world):
        self.world = world
        self.opts = world.opts
        self.tokens = Tokens()
        self.consents = {}  # request id -> authorize parameters
        self.codes = {}     # authorization code -> record
        self.build()
        self.auth_router = Router([
            ("GET", "/connect/authorize", self.authorize),
            ("POST", "/connect/authorize/decision", self.decision),
            ("POST", "/connect/token", self.token),
        ])
        self.api_router = Router([
            ("GET", "/v1/homes", self.api_homes),
            ("GET", "/v1/homes/{home}/devices", self.api_devices),
            ("GET", "/v1/homes/{home}/devices/{device}", self.api_device),
            ("GET", "/v1/homes/{home}/devices/{device}/history", self.api_history),
        ])

    # ---- dataset

    def build(self):
        o = self.opts
        self.homes = []          # home objects, as served
        self.home_devices = {}   # home id -> [device ids]
        self.details = {}        # device id -> detail object
        self.kind = {}           # device id -> category
        self.padding = {}        # device id -> bytes its detail is padded to (add_home)
        self.padding_text = {}   # size -> the padding attributes' text, made once
        for hi in range(o.tibber_homes):
            hid = self.new_home()
            ids = []
            for di in range(o.tibber_devices):
                did = self.add_device(self.KINDS[di % len(self.KINDS)], 100 + hi * 10 + di, hi, di)
                ids.append(did)
            self.home_devices[hid] = ids
        # one vehicle under the first two homes (the doc's example id)
        if self.homes:
            shared = self.add_device("vehicle", 123, 0, 99, shared=True)
            for home in self.homes[:2]:
                self.home_devices[home["id"]].append(shared)

    def new_home(self):
        """Appends the next home (no devices yet) and returns its id."""
        hi = len(self.homes)
        hid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"emulator.invalid/tibber/home/{hi + 1}"))
        self.homes.append({
            "id": hid, "timeZone": "Europe/Berlin",
            "info": {"name": f"Home {hi + 1}", "type": "HOUSE" if hi % 2 == 0 else "APARTMENT",
                     "size": 140 - hi * 30, "numberOfResidents": 3, "mainFuseSize": 25},
            "address": {"address1": f"Beispielweg {hi + 1}", "address2": None,
                        "postalCode": "20095", "city": "Hamburg", "country": "DE"}})
        self.home_devices[hid] = []
        return hid

    def add_home(self, devices, detail_bytes=0):
        """A new home with @devices chargers whose ids and names are short (ids are
        opaque, names the user's: a 100 000-device listing stays under a client's 16 MiB
        cap), each detail padded to about @detail_bytes with extra attributes. Returns
        the home's id."""
        hid = self.new_home()
        hi = len(self.homes) - 1
        for di in range(devices):
            did = self.add_device("charger", 1000 + di, hi, di,
                                  short_id=device_id(f"{hi + 1}.{di}"))
            self.details[did]["info"]["name"] = f"c{di}"
            # No history, as tibber.md's vehicle: 100 000 entries with a retention and
            # three resolutions each would pass the 16 MiB cap.
            self.details[did]["supportedHistory"] = {"resolutions": []}
            self.home_devices[hid].append(did)
            if detail_bytes:
                self.padding[did] = detail_bytes
        return hid

    def padded_body(self, detail, size):
        """@detail as served with its attributes followed by padding attributes, about
        @size bytes in all; the padding's text is made once per size."""
        cache = self.padding_text
        if size not in cache:
            value = "x" * 1000
            piece = json.dumps({"id": "diagnostics.log", "value": value})
            cache[size] = ", ".join([piece] * max(1, size // (len(piece) + 2))).encode()
        head = {k: v for k, v in detail.items() if k != "attributes"}
        attrs = [json.dumps(a, ensure_ascii=False) for a in detail.get("attributes", [])]
        return b"".join([json.dumps(head, ensure_ascii=False)[:-1].encode(),
                         b', "attributes": [', ", ".join(attrs).encode(),
                         b", " if attrs else b"", cache[size], b"]}"])

    def add_device(self, kind, n, hi, di, shared=False, short_id=None):
        seen = iso(BASE_TIME - 300 + n)
        if kind == "vehicle" and shared:  # the tibber.md example vehicle
            did, ext = device_id("volkswagen enode vehicle:123"), "WVWZZZE1ZMP000001"
            info = ("ID.7", "Volkswagen", "ID.7")
        elif kind == "vehicle":
            did = device_id(f"tesla enode vehicle:{n}")
            ext = f"tesla:5YJ3E1EA7KF{digits('vin', n, n=6)}"
            info = (f"Model 3 ({n})", "Tesla", "Model 3")
        elif kind == "charger":
            did, ext = device_id(f"easee enode charger:{n}"), f"EH{digits('charger', n, n=6)}"
            info = ("Garage charger", "Easee", "Home")
        elif kind == "battery":
            did, ext = device_id(f"sonnen enode battery:{n}"), f"sonnen:{digits('battery', n, n=8)}"
            info = ("sonnenBatterie", "sonnen", "eco 10")
        else:
            did = device_id(f"netatmo enode thermostat:{n}")
            ext = f"NA{digits('thermostat', n, n=8)}"
            info = ("Living room thermostat", "Netatmo", "Smart Thermostat")
        info = dict(zip(("name", "brand", "model"), info))
        did = short_id or did
        odd = (n + di) % 2 == 1
        detail = {"id": did, "externalId": ext, "info": info,
                  "supportedHistory": {"resolutions": list(HISTORY_RESOLUTIONS.get(kind, ())),
                                       "maxRetentionDays": HISTORY_RETENTION_DAYS},
                  "status": {"lastSeen": seen}}
        if kind == "vehicle":
            detail["attributes"] = [{"id": "vinNumber", "value": ext.split(":")[-1]},
                                    {"id": "isOnline", "value": True}]
            detail["capabilities"] = [
                {"id": "storage.stateOfCharge", "description": "state of charge",
                 "value": 74 if shared else 40 + n % 50, "unit": "%"},
                {"id": "storage.targetStateOfCharge", "description": "target state of charge",
                 "value": None if odd else 80, "unit": "%"},
                {"id": "range.remaining", "description": "estimated remaining driving range",
                 "value": 356000 if shared else 200000 + n * 100, "unit": "m"},
                {"id": "connector.status", "description": "vehicle plug status",
                 "value": "disconnected",
                 "availableValues": ["connected", "disconnected", "unknown"]},
                {"id": "charging.status", "description": "vehicle charging status",
                 "value": "idle", "availableValues": ["charging", "idle", "unknown"]}]
        elif kind == "charger":
            detail["attributes"] = [{"id": "isOnline", "value": True},
                                    {"id": "connectivity", "status": "online", "since": seen}]
            detail["capabilities"] = [
                {"id": "charging.status", "description": "charger status", "value": "idle",
                 "availableValues": ["charging", "idle", "disconnected", "unknown"]},
                {"id": "grid.phaseCount", "description": "number of phases", "value": 3,
                 "unit": ""},
                {"id": "charging.current.max", "description": "maximum charging current",
                 "value": 16, "unit": "A"},
                {"id": "charging.current.offlineFallback",
                 "description": "offline fallback current",
                 "value": None if odd else 6, "unit": "A"},
                {"id": "cable.locked", "description": "cable lock engaged", "value": False}]
            detail["firmware"] = {"version": "4.12.1", "updateAvailable": False}
        elif kind == "battery":
            detail["attributes"] = [{"id": "isOnline", "value": not odd},
                                    {"id": "connectivity", "status": "offline" if odd else "online",
                                     "reason": "timeout" if odd else None}]
            detail["capabilities"] = [
                {"id": "storage.stateOfCharge", "description": "state of charge",
                 "value": 55.5, "unit": "%"},
                {"id": "storage.power", "description": "charge (+) or discharge (-) power",
                 "value": None, "unit": "W"},
                {"id": "storage.mode", "description": "operating mode",
                 "value": "selfConsumption", "unit": ""}]
        else:
            detail["attributes"] = [{"id": "isOnline", "value": True}]
            detail["capabilities"] = [
                {"id": "temperature.ambient", "description": "measured room temperature",
                 "value": 21.3, "unit": "°C"},
                {"id": "temperature.setpoint", "description": "target temperature",
                 "value": 20.5, "unit": "°C"},
                {"id": "heating.active", "description": "heating demand", "value": True},
                {"id": "mode", "description": "thermostat mode", "value": "comfort",
                 "availableValues": ["comfort", "eco", "away", "off"]}]
            detail["firmware"] = {"version": "262", "updateAvailable": True}
        self.details[did] = detail
        self.kind[did] = kind
        return did

    @staticmethod
    def list_entry(detail):
        return {k: detail[k] for k in ("id", "externalId", "info", "supportedHistory")}

    def data(self):
        return {"homes": self.homes,
                "devices": {h: [self.list_entry(self.details[d]) for d in ids]
                            for h, ids in self.home_devices.items()},
                "details": self.details}

    # ---- auth (/connect)

    def handle_auth(self, req):
        fn, params = self.auth_router.match(req.method, req.path)
        if fn is None:
            return html_response(405 if params == "method" else 404, "Error", "<p>Not found.</p>")
        return fn(req, **params)

    def redirect_ok(self, uri):
        if self.opts.tibber_redirect_uri:
            return uri in self.opts.tibber_redirect_uri
        return bool(re.fullmatch(r"http://(127\.0\.0\.1|localhost):\d{1,5}/callback", uri or ""))

    def authorize(self, req):
        q = req.query
        if q.get("client_id") != self.opts.tibber_client_id:
            return html_response(400, "Error",
                                 "<h1>Error</h1><p>invalid_client: unknown client</p>")
        redirect_uri = q.get("redirect_uri", "")
        if not self.redirect_ok(redirect_uri):
            return html_response(400, "Error",
                                 "<h1>Error</h1><p>invalid_request: invalid redirect_uri</p>")
        state = {"state": q["state"]} if "state" in q else {}

        def fail(error, desc):
            return redirect(add_query(redirect_uri, {"error": error, "error_description": desc,
                                                     **state}))
        if q.get("response_type") != "code":
            return fail("unsupported_response_type", "response_type must be code")
        scopes = q.get("scope", "").split()
        if not scopes or any(s not in TIBBER_SCOPES for s in scopes):
            return fail("invalid_scope", "unknown or missing scope")
        challenge = q.get("code_challenge")
        if challenge and q.get("code_challenge_method") != "S256":
            return fail("invalid_request", "code_challenge_method must be S256")
        params = {"redirect_uri": redirect_uri, "scopes": scopes, "challenge": challenge,
                  "state": q.get("state"), "nonce": q.get("nonce"),
                  "expires": now() + 600}
        if self.world.config["auto_approve"]:
            return self.grant_code(params)
        rid = secrets.token_urlsafe(16)
        self.consents[rid] = params
        items = "\n".join(f"<li>{html.escape(s)}</li>" for s in scopes)
        return html_response(200, "Tibber – Authorize", (
            "<h1>Authorize access</h1>\n"
            f"<p>The application <b>{html.escape(self.opts.tibber_client_id)}</b> asks for:</p>\n"
            f"<ul id=\"scopes\">\n{items}\n</ul>\n"
            "<form method=\"post\" action=\"/connect/authorize/decision\">\n"
            f"<input type=\"hidden\" name=\"request_id\" value=\"{rid}\">\n"
            '<button id="allow" name="decision" value="allow" type="submit">Allow</button>\n'
            '<button id="deny" name="decision" value="deny" type="submit">Deny</button>\n'
            "</form>"))

    def grant_code(self, params):
        code = secrets.token_urlsafe(32)
        self.codes[code] = {**params, "expires": now() + CODE_TTL, "used": False}
        out = {"code": code}
        if params["state"] is not None:
            out["state"] = params["state"]
        return redirect(add_query(params["redirect_uri"], out))

    def decision(self, req):
        params = self.consents.pop(req.form.get("request_id", ""), None)
        if params is None or params["expires"] < now():
            return html_response(400, "Error", "<h1>Error</h1><p>Unknown or expired request.</p>")
        if req.form.get("decision") == "allow":
            return self.grant_code(params)
        out = {"error": "access_denied", "error_description": "The user denied the request."}
        if params["state"] is not None:
            out["state"] = params["state"]
        return redirect(add_query(params["redirect_uri"], out))

    def client_ok(self, req):
        cid, secret = req.form.get("client_id"), req.form.get("client_secret")
        auth = req.headers.get("Authorization") or ""
        if auth[:6].lower() == "basic ":
            try:
                user, _, pw = base64.b64decode(auth[6:].strip()).decode().partition(":")
                cid, secret = urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(pw)
            except (ValueError, UnicodeDecodeError):
                return False
        return (cid == self.opts.tibber_client_id and secret is not None
                and hmac.compare_digest(secret.encode(), self.opts.tibber_client_secret.encode()))

    def token(self, req):
        grant = req.form.get("grant_type")
        if grant in ("authorization_code", "refresh_token"):
            self.world.stats.token("tibber", grant)
        if not self.client_ok(req):
            return json_response(401, {"error": "invalid_client"})
        if grant == "authorization_code":
            return self.grant_authorization_code(req.form)
        if grant == "refresh_token":
            return self.grant_refresh(req.form)
        return json_response(400, {"error": "unsupported_grant_type"})

    def grant_authorization_code(self, f):
        rec = self.codes.get(f.get("code") or "")
        bad = lambda d: json_response(400, {"error": "invalid_grant", "error_description": d})
        if rec is None or rec["used"]:
            return bad("invalid authorization code")
        rec["used"] = True  # single use, even when the exchange fails below
        if rec["expires"] < now():
            return bad("authorization code expired")
        if f.get("redirect_uri") != rec["redirect_uri"]:
            return bad("redirect_uri does not match")
        if rec["challenge"]:
            verifier = f.get("code_verifier")
            if not verifier:
                return bad("code_verifier missing")
            if b64url(hashlib.sha256(verifier.encode()).digest()) != rec["challenge"]:
                return bad("code_verifier does not match the code_challenge")
        return json_response(200, self.issue(rec["scopes"], rec.get("nonce"), True))

    def grant_refresh(self, f):
        rotate = self.world.config["tibber_refresh_returns_new_token"]
        rec = self.tokens.take_refresh(f.get("refresh_token"), rotate=rotate)
        if rec is None:
            self.world.stats.refresh_reuse += 1
            return json_response(400, {"error": "invalid_grant",
                                       "error_description": "invalid refresh token"})
        return json_response(200, self.issue(rec["scope"], None, rotate))

    def issue(self, scopes, nonce, with_refresh):
        ttl = self.world.config["tibber_access_ttl"]
        iss = "https://thewall.tibber.com"
        out = {"access_token": self.tokens.issue_access(ttl, scopes, {
            "iss": iss, "sub": TIBBER_USER_ID, "aud": "data-api",
            "client_id": self.opts.tibber_client_id, "scope": scopes}),
            "expires_in": ttl, "token_type": "Bearer", "scope": " ".join(scopes)}
        if "openid" in scopes:
            now_s = int(now())
            claims = {"iss": iss, "sub": TIBBER_USER_ID, "aud": self.opts.tibber_client_id,
                      "iat": now_s, "exp": now_s + 300, "email": "test.user@example.com"}
            if nonce:
                claims["nonce"] = nonce
            out["id_token"] = make_jwt(claims)
        if with_refresh and "offline_access" in scopes:
            out["refresh_token"] = self.tokens.issue_refresh(scopes)
        return out

    # ---- API (/v1)

    def handle_api(self, req):
        self.request = req  # the history call reads its query and host
        if not req.user_agent:
            return problem(400, "Bad Request", "A User-Agent header is required.")
        tok = self.tokens.check_access(req.bearer)
        if tok is None:
            return problem(401, "Unauthorized", "Missing, invalid or expired access token.",
                           [("WWW-Authenticate", 'Bearer error="invalid_token"')])
        fn, params = self.api_router.match(req.method, req.path)
        if fn is None:
            if params == "method":
                return problem(405, "Method Not Allowed", f"{req.method} is not supported here.")
            return problem(404, "Not Found", "No such resource.")
        return fn(tok["scope"], **params)

    def visible(self, home, scopes):
        if home not in self.home_devices:
            raise NotFound(problem(404, "Not Found", "Home not found."))
        return [d for d in self.home_devices[home] if CATEGORY_SCOPE[self.kind[d]] in scopes]

    def api_homes(self, scopes):
        return json_response(200, {"homes": self.homes}, TIBBER_JSON)

    def api_devices(self, scopes, home):
        ids = self.visible(home, scopes)
        return json_response(200, {"devices": [self.list_entry(self.details[d]) for d in ids]},
                             TIBBER_JSON)

    def api_device(self, scopes, home, device):
        if device not in self.visible(home, scopes):
            return problem(404, "Not Found", "Device not found.")
        if device in self.padding:
            return Response(200, self.padded_body(self.details[device], self.padding[device]),
                            TIBBER_JSON)
        return json_response(200, self.details[device], TIBBER_JSON)

    def api_history(self, scopes, home, device):
        """A page of a device's history (docs/devices/device-history): the window is
        clamped to the retention and to now, since and until lose their minutes,
        a page holds at most the category's page size of points, and the next (forward,
        with since) or prev (backward, with until only) link names the rest."""
        req = self.request
        if device not in self.visible(home, scopes):
            return problem(404, "Not Found", "Device not found.")
        q = req.query
        res = q.get("resolution")
        detail = self.details[device]
        if res not in detail["supportedHistory"]["resolutions"]:
            return problem(400, "Bad Request",
                           f"Resolution {res!r} is not supported by this device.")
        try:
            since = parse_time(q["since"]) if "since" in q else None
            until = parse_time(q["until"]) if "until" in q else None
        except ValueError:
            return problem(400, "Bad Request", "since and until must be ISO 8601 date-times.")
        now_s = now()
        oldest = now_s - detail["supportedHistory"]["maxRetentionDays"] * 86400
        start = max(since if since is not None else (until or now_s) - 86400, oldest)
        end = min(until if until is not None else now_s, now_s - HISTORY_LAG_S)
        points = [pt for pt in history_points(res, start, end)]
        size = self.world.config["tibber_history_page_size"] or HISTORY_PAGE_SIZE[self.kind[device]]
        forward = since is not None or until is None
        page = points[:size] if forward else points[-size:]
        more = len(points) > len(page)
        base = f"{req.base}{req.path}"
        nxt = prv = None
        if more and forward:
            nxt = add_query(base, {"resolution": res, "since": iso_z(page[-1][1]),
                                   **({"until": q["until"]} if until is not None else {})})
        elif more:
            prv = add_query(base, {"resolution": res, "until": iso_z(page[0][0])})
        self.world.stats.history_call(device, res, q.get("since"), q.get("until"), len(page))
        return json_response(200, {
            "query": {"effectiveStart": iso(start), "effectiveEnd": iso(end), "resolution": res},
            "data": [{"from": iso(a), "to": iso(b), "metrics": history_metrics(device, self.kind[device], res, a, b)}
                     for a, b in page],
            "next": nxt, "prev": prv}, TIBBER_JSON)

    # ---- control helpers

    def set_capability(self, device, capability, value):
        detail = self.details.get(device)
        cap = detail and next((c for c in detail["capabilities"] if c["id"] == capability), None)
        if not cap:
            return False
        cap["value"] = value
        detail["status"]["lastSeen"] = iso(now())
        return True

    def set_online(self, device, online):
        """The device's isOnline attribute; status.lastSeen stays when it goes offline
        (Tibber stops hearing from it) and moves to now when it comes back."""
        detail = self.details.get(device)
        attr = detail and next((a for a in detail.get("attributes", [])
                                if a.get("id") == "isOnline"), None)
        if not attr:
            return False
        attr["value"] = bool(online)
        if online:
            detail["status"]["lastSeen"] = iso(now())
        return True

    def enroll_device(self, home, kind):
        """A device newly connected to @home (a charger paired in the Tibber app): a new
        id, listed at the end. None when there is no such home."""
        if home not in self.home_devices or kind not in self.KINDS:
            return None
        self.enrolled = getattr(self, "enrolled", 0) + 1
        hi = [h["id"] for h in self.homes].index(home)
        did = self.add_device(kind, 100000 + self.enrolled, hi, self.enrolled)
        self.home_devices[home].append(did)
        return did

    def remove_device(self, device):
        if device not in self.details:
            return False
        del self.details[device], self.kind[device]
        self.padding.pop(device, None)
        for ids in self.home_devices.values():
            if device in ids:
                ids.remove(device)
        return True


# ---------------------------------------------------------------- Tibber history

# What each category's devices offer in the emulated world (a vehicle: no history, as the
# tibber.md example); one retention for all (the docs put maxRetentionDays beside the
# resolutions in supportedHistory; UNCONFIRMED where exactly).
HISTORY_RESOLUTIONS = {"charger": ("hour", "day", "month"),
                       "battery": ("quarterHour", "hour", "day"),
                       "thermostat": ("hour", "day")}
HISTORY_RETENTION_DAYS = 90
# An interval is in the history this long after it ends ("after the initial processing";
# how long that takes is not documented: UNCONFIRMED, and a client must not pin a day
# fetched at midnight).
HISTORY_LAG_S = 300
# Points a page holds at most, by category ("n might differ by device category or
# integration"): small enough that a day of hours takes several pages.
HISTORY_PAGE_SIZE = {"charger": 10, "battery": 30, "thermostat": 7, "vehicle": 10}
HISTORY_METRICS = {"charger": ("energyCharged",),
                   "battery": ("energyCharged", "energyDischarged", "stateOfCharge"),
                   "thermostat": ("indoorTemperature", "energyConsumed"),
                   "vehicle": ("energyCharged", "stateOfCharge")}


def parse_time(text):
    """ISO 8601 with a zone -> unix seconds, its minutes, seconds and milliseconds cut
    (the API truncates every time it is sent: a cursor that is not on the hour repeats
    the points since the hour, which a client must drop)."""
    t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError("no time zone")
    return int(t.timestamp()) // 3600 * 3600


def iso_z(ts):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def history_bounds(res, t):
    """The interval of @res that holds @t: (from, to) in unix seconds, UTC."""
    if res in ("quarterHour", "hour"):
        step = 900 if res == "quarterHour" else 3600
        a = int(t) // step * step
        return a, a + step
    d = datetime.datetime.fromtimestamp(int(t), datetime.timezone.utc)
    if res == "day":
        a = d.replace(hour=0, minute=0, second=0, microsecond=0)
        b = a + datetime.timedelta(days=1)
    else:
        a = d.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        b = a.replace(year=a.year + 1, month=1) if a.month == 12 else a.replace(month=a.month + 1)
    return int(a.timestamp()), int(b.timestamp())


def history_points(res, start, end):
    """The finished intervals of @res inside [start, end], oldest first."""
    out = []
    a, b = history_bounds(res, start)
    if a < start:
        a, b = history_bounds(res, b)
    while b <= end:
        out.append((a, b))
        a, b = history_bounds(res, b)
    return out


def history_metrics(device, kind, res, a, b):
    """Made-up values, the same for the same interval on every call."""
    hours = (b - a) / 3600
    out = {}
    for name in HISTORY_METRICS[kind]:
        h = int(hashlib.sha256(f"{device}/{res}/{a}/{name}".encode()).hexdigest()[:8], 16)
        if name == "stateOfCharge":
            out[name] = round(h % 1000 / 10, 1)
        elif name == "indoorTemperature":
            out[name] = round(18 + h % 60 / 10, 1)
        else:
            out[name] = round(h % 3000 / 1000 * hours, 3)
    return out


# ---------------------------------------------------------------- faults

BAD_UTF8 = "\ue000BADUTF8\ue000"  # replaced by invalid UTF-8 bytes after encoding


def hostile_ids():
    return ["..", ".", "a/b", "", "x" * 300, "dup", "dup", BAD_UTF8, "nul\u0000byte",
            "new\nline", "-rf", "evil\u202etxt.exe", "line\u0085next"]


def encode_hostile(text):
    return text.encode("utf-8").replace(BAD_UTF8.encode("utf-8"), b"bad\xff\xfe\xc3(utf8")


def badids_body(path):
    """200 bodies with the right shape for path but hostile ids."""
    ids = hostile_ids()
    dumps = lambda o: json.dumps(o, ensure_ascii=False)
    if path == "/api/v2/me":
        homes = [{"id": i, "name": i} for i in ids] + [
            {"id": 1001, "name": "dup"}, {"id": 1001, "name": "dup"}, {"id": -1, "name": "neg"},
            {"id": 2 ** 64, "name": "huge"}, {"id": 1.5, "name": "float"}]
        text = dumps({"name": "x", "email": "x@example.com", "username": "x", "id": "..",
                      "homes": homes, "mobileDevices": []})
    elif re.fullmatch(r"/api/v2/homes/[^/]+/zones", path):
        text = dumps([{"id": i, "name": i, "type": "HEATING", "devices": []} for i in ids]
                     + [{"id": 1, "name": "dup"}, {"id": 1, "name": "dup"},
                        {"id": -7, "name": "neg"}])
    elif re.fullmatch(r"/api/v2/homes/[^/]+/zoneStates", path):
        st = dumps({"tadoMode": "HOME", "setting": {"type": "HEATING", "power": "ON",
                                                    "temperature": temp(20.0)},
                    "sensorDataPoints": {}, "activityDataPoints": {}})
        text = '{"zoneStates":{' + ",".join(f"{dumps(i)}:{st}" for i in ids + ["1", "1"]) + "}}"
    elif re.fullmatch(r"/api/v2/homes/[^/]+/devices", path):
        text = dumps([{"deviceType": "VA02", "serialNo": i, "shortSerialNo": i} for i in ids])
    elif re.fullmatch(r"/api/v2/homes/[^/]+/deviceList", path):
        text = dumps({"entries": [{"type": "VA02", "device": {"deviceType": "VA02", "serialNo": i},
                                   "zone": {"discriminator": i}} for i in ids]})
    elif re.fullmatch(r"/api/v2/homes/[^/]+/mobileDevices", path):
        text = dumps([{"id": i, "name": i} for i in ids])
    elif re.fullmatch(r"/hops/homes/[^/]+/rooms", path):
        text = dumps([{"id": i, "name": i, "sensorDataPoints": {}, "setting": {"power": "ON"},
                       "connection": {"state": "CONNECTED"}} for i in ids]
                     + [{"id": 1, "name": "dup"}, {"id": 1, "name": "dup"}])
    elif re.fullmatch(r"/hops/homes/[^/]+/roomsAndDevices", path):
        devs = [{"serialNumber": i, "type": "VA04", "connection": {"state": "CONNECTED"}}
                for i in ids]
        text = dumps({"rooms": [{"roomId": i, "roomName": i, "devices": devs} for i in ids],
                      "otherDevices": devs})
    elif path == "/v1/homes":
        text = dumps({"homes": [{"id": i, "info": {"name": i}} for i in ids]})
    elif re.fullmatch(r"/v1/homes/[^/]+/devices", path):
        text = dumps({"devices": [{"id": i, "externalId": i,
                                   "info": {"name": i, "brand": i, "model": i},
                                   "supportedHistory": {"resolutions": []}} for i in ids]})
    elif re.fullmatch(r"/v1/homes/[^/]+/devices/[^/]+", path):
        text = dumps({"id": "..", "externalId": "a/b",
                      "info": {"name": "..", "brand": "", "model": BAD_UTF8},
                      "attributes": [{"id": i, "value": i} for i in ids],
                      "capabilities": [{"id": i, "value": i, "unit": i} for i in ids]})
    else:
        text = dumps({"id": "..", "name": "a/b", "items": [{"id": i} for i in ids]})
    return encode_hostile(text)


class Faults:
    """Rules from /_control/fail. The newest matching rule wins."""

    def __init__(self):
        self.rules = []

    def add(self, kind, count, path):
        if count == 0:
            self.rules.clear()
            return
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        self.rules.insert(0, {"kind": kind, "count": count, "path": path})

    def take(self, req):
        for rule in self.rules:
            if rule["path"] is None or rule["path"] in req.path:
                if rule["count"] > 0:
                    rule["count"] -= 1
                    if rule["count"] == 0:
                        self.rules.remove(rule)
                return rule["kind"]
        return None


def fault_response(kind, req, world):
    if kind in ("500", "502", "503", "429"):
        status = int(kind)
        headers = world.retry_after_header() if status in (429, 503) else []
        if status == 429:
            if req.path.startswith("/api/v2/"):
                return world.tado.too_many(now())
            world.stats.rate_limited(None)
            return Response(429, b"", None, headers)
        if status == 500:
            return json_response(500, {"error": "internal_error"}, headers=headers)
        reason = "Bad Gateway" if status == 502 else "Service Unavailable"
        page = f"<html><body><h1>{status} {reason}</h1></body></html>"
        return Response(status, page.encode(), "text/html", headers)
    if kind == "drop":
        resp = Response(0)
        resp.drop = True
        return resp
    if kind == "malformed":
        return Response(200, b'{"not json', "application/json")
    if kind == "empty":
        return Response(200, b"", "application/json")
    if kind == "truncated":
        resp = Response(200, b'{"truncated":"' + b"y" * 200, "application/json")
        resp.declared_length = len(resp.body) + 1000
        resp.after = "close"
        return resp
    if kind == "stall":
        full = b'{"stall":"' + b"z" * 4000 + b'"}'
        resp = Response(200, full[:len(full) // 2], "application/json")
        resp.declared_length = len(full)
        resp.after = "stall"
        return resp
    if kind == "huge":
        resp = Response(200, b"", "application/json")
        resp.declared_length = HUGE_SIZE
        resp.stream = huge_stream()
        return resp
    if kind == "nested":
        return Response(200, b"[" * 100000 + b"]" * 100000, "application/json")
    if kind == "badids":
        return Response(200, badids_body(req.path), "application/json")
    raise ValueError(kind)


def huge_stream():
    head, tail = b'{"homes":[{"id":"huge","name":"', b'"}]}'
    left = HUGE_SIZE - len(head) - len(tail)
    chunk = b"x" * (1 << 20)
    yield head
    while left > 0:
        n = min(left, len(chunk))
        yield chunk[:n]
        left -= n
    yield tail


# ---------------------------------------------------------------- control interface

class Control:
    def __init__(self, world):
        self.world = world
        self.router = Router([
            ("GET", "/_control/stats", lambda b: world.stats.as_json()),
            ("POST", "/_control/reset_stats", self.reset_stats),
            ("GET", "/_control/tokens", self.tokens),
            ("GET", "/_control/pending", lambda b: world.tado.pending()),
            ("POST", "/_control/approve", lambda b: self.decide(b, True)),
            ("POST", "/_control/deny", lambda b: self.decide(b, False)),
            ("GET", "/_control/config", lambda b: world.config),
            ("POST", "/_control/config", self.config),
            ("POST", "/_control/latency", self.latency),
            ("GET", "/_control/fail", lambda b: {"rules": world.faults.rules}),
            ("POST", "/_control/fail", self.fail),
            ("POST", "/_control/expire_tokens", self.expire_tokens),
            ("POST", "/_control/revoke_refresh_tokens", self.revoke_refresh_tokens),
            ("POST", "/_control/reset_quota", self.reset_quota),
            ("POST", "/_control/tado/zone_temperature", self.zone_temperature),
            ("POST", "/_control/tado/remove_zone", self.remove_zone),
            ("POST", "/_control/tado/generation", self.generation),
            ("POST", "/_control/tado/invite", self.invite),
            ("POST", "/_control/tado/login_as", self.login_as),
            ("POST", "/_control/tado/zone_created", self.zone_created),
            ("POST", "/_control/tibber/capability", self.capability),
            ("POST", "/_control/tibber/remove_device", self.remove_device),
            ("POST", "/_control/tibber/add_device", self.add_device),
            ("POST", "/_control/tibber/online", self.online),
            ("POST", "/_control/tibber/add_home", self.add_home),
            ("GET", "/_control/data", lambda b: world.data()),
            ("POST", "/_control/reset", self.reset),
            ("GET", "/_control/clock", self.clock),
            ("POST", "/_control/clock", self.move_clock),
        ])

    def handle(self, req):
        fn, _ = self.router.match(req.method, req.path)
        if fn is None:
            return json_response(404, {"error": "no such control endpoint"})
        try:
            body = req.json()
            with self.world.lock:
                out = fn(body)
        except (ValueError, KeyError, TypeError) as e:
            return json_response(400, {"error": f"{type(e).__name__}: {e}"})
        except NotFound as e:
            return e.response
        return json_response(200, out if out is not None else {"ok": True})

    def reset_stats(self, body):
        old, self.world.stats = self.world.stats, Stats()
        self.world.stats.in_flight = old.in_flight

    def tokens(self, body):
        tado, tibber = self.world.tado.tokens.summary(), self.world.tibber.tokens.summary()
        merged = {k: tado[k] + tibber[k] for k in tado}
        return {**merged, "tado": tado, "tibber": tibber}

    def decide(self, body, allow):
        code = body.get("user_code")
        done = self.world.tado.decide(code, allow)
        if code is not None and not done:
            raise NotFound(json_response(404, {"error": "no pending user_code " + str(code)}))
        return {"approved" if allow else "denied": done}

    def config(self, body):
        cfg = self.world.config
        for key, value in body.items():
            if key not in cfg:
                raise KeyError(f"unknown config key {key}")
            if key == "ratelimit_header_case" and value not in ("canonical", "lower"):
                raise ValueError("ratelimit_header_case: canonical or lower")
            if key == "retry_after" and value is not None:
                value = str(value)
            elif key in ("auto_approve", "tibber_refresh_returns_new_token"):
                value = bool(value)
            elif key not in ("ratelimit_header_case",):
                value = int(value)
                if value < 0:
                    raise ValueError(f"{key} must be >= 0")
                if key == "quota_window" and value < 1:
                    raise ValueError("quota_window must be >= 1")
            cfg[key] = value
        if not 0 <= cfg["quota_reset_s"] < cfg["quota_window"]:
            cfg["quota_reset_s"] %= max(1, cfg["quota_window"])
        if "quota" in body or "quota_window" in body:
            self.reset_quota(body)
        return cfg

    def latency(self, body):
        self.world.latency_ms = max(0, int(body.get("ms", 0)))
        return {"ms": self.world.latency_ms}

    def fail(self, body):
        count = int(body.get("count", 1))
        self.world.faults.add(str(body.get("kind", "500")), count, body.get("path"))
        return {"rules": self.world.faults.rules}

    def expire_tokens(self, body):
        self.world.tado.tokens.expire_all()
        self.world.tibber.tokens.expire_all()

    def revoke_refresh_tokens(self, body):
        clouds = [body["cloud"]] if body.get("cloud") else ["tado", "tibber"]
        for c in clouds:
            getattr(self.world, c).tokens.revoke_all_refresh()

    def reset_quota(self, body):
        self.world.tado.used = 0

    def zone_temperature(self, body):
        if not self.world.tado.set_zone_temperature(body["home"], body["zone"], body["celsius"],
                                                    body.get("humidity")):
            raise NotFound(json_response(404, {"error": "no such heating zone"}))

    def generation(self, body):
        """A home of a generation no client knows yet (a tado X home renamed): its
        zones stay as empty as a tado X home's on my.tado.com."""
        h = self.world.tado.homes.get(int(body["home"]))
        if h is None:
            raise NotFound(json_response(404, {"error": "no such home"}))
        h["home"]["generation"] = str(body["generation"])

    def invite(self, body):
        """The second user accepted an invitation to @home: /me lists it, and the home's
        resources answer that user's token."""
        hid = int(body["home"])
        if hid not in self.world.tado.homes:
            raise NotFound(json_response(404, {"error": "no such home"}))
        self.world.tado.users[TADO_SECOND_USER_ID]["homes"].add(hid)

    def login_as(self, body):
        """Who approves the device codes asked for from now on: "first" or "second"."""
        self.world.tado.login_user = {"first": TADO_USER_ID,
                                      "second": TADO_SECOND_USER_ID}[body["user"]]

    def zone_created(self, body):
        """Moves a zone's dateCreated (and its home's, when later) to days_ago days before
        now: its day reports start that day."""
        h = self.world.tado.homes.get(int(body["home"]))
        z = h and next((z for z in h["zones"] if z["id"] == int(body["zone"])), None)
        if z is None:
            raise NotFound(json_response(404, {"error": "no such zone"}))
        when = now() - float(body["days_ago"]) * 86400
        z["dateCreated"] = iso(when)
        if parse_iso(h["home"]["dateCreated"]) > when:
            h["home"]["dateCreated"] = iso(when)
        return {"dateCreated": z["dateCreated"]}

    def remove_zone(self, body):
        if not self.world.tado.remove_zone(body["home"], body["zone"]):
            raise NotFound(json_response(404, {"error": "no such zone"}))

    def capability(self, body):
        if not self.world.tibber.set_capability(body["device"], body["capability"], body["value"]):
            raise NotFound(json_response(404, {"error": "no such device or capability"}))

    def online(self, body):
        if not self.world.tibber.set_online(body["device"], body["online"]):
            raise NotFound(json_response(404, {"error": "no such device"}))

    def remove_device(self, body):
        if not self.world.tibber.remove_device(body["device"]):
            raise NotFound(json_response(404, {"error": "no such device"}))

    def add_home(self, body):
        devices, detail_bytes = int(body["devices"]), int(body.get("detail_bytes", 0))
        if not 0 <= devices <= 1_000_000 or not 0 <= detail_bytes <= 64 << 20:
            raise ValueError("devices: 0..1000000, detail_bytes: 0..64 MiB")
        return {"home": self.world.tibber.add_home(devices, detail_bytes)}

    def add_device(self, body):
        did = self.world.tibber.enroll_device(body["home"], body.get("kind", "charger"))
        if did is None:
            raise NotFound(json_response(404, {"error": "no such home or kind"}))
        return {"device": did}

    def reset(self, body):
        self.world.reset()

    def clock(self, body):
        t = now()
        return {"now_s": t, "iso": iso(t), "offset_s": _clock_offset_s}

    def move_clock(self, body):
        seconds = float(body["advance_s"])
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError("advance_s must be a finite number >= 0: the clock never goes back")
        advance_clock(seconds)
        return self.clock(body)


# ---------------------------------------------------------------- the world

def area_of(path):
    for prefix, area in (("/oauth2/", "tado_auth"), ("/api/v2/", "tado_api"),
                         ("/hops/", "tado_api"),
                         ("/connect/", "tibber_auth"), ("/v1/", "tibber_api"),
                         ("/_control/", "control")):
        if path.startswith(prefix):
            return area
    return "other"


class World:
    """Everything the server knows; one lock guards it all."""

    def __init__(self, opts):
        self.opts = opts
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self.control = Control(self)
        self.reset()

    def reset(self):
        o = self.opts
        self.config = {"device_interval": o.device_interval,
                       "device_expires_in": o.device_expires_in,
                       "access_ttl": o.access_ttl, "tibber_access_ttl": o.tibber_access_ttl,
                       "quota": o.quota, "quota_window": o.quota_window,
                       "quota_reset_s": o.quota_reset_s,
                       "auto_approve": o.auto_approve, "tibber_refresh_returns_new_token": True,
                       "retry_after": None, "ratelimit_header_case": "canonical",
                       "refresh_ttl": o.refresh_ttl, "tibber_history_page_size": 0}
        self.stats = Stats()
        self.faults = Faults()
        self.latency_ms = 0
        reset_clock()
        self.tado = Tado(self)
        self.tibber = Tibber(self)

    def retry_after_header(self):
        ra = self.config["retry_after"]
        return [("Retry-After", ra)] if ra is not None else []

    def data(self):
        return {"tado": self.tado.data(), "tibber": self.tibber.data()}

    def begin(self):
        with self.lock:
            self.stats.in_flight += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)

    def end(self, status, counted):
        with self.lock:
            self.stats.in_flight -= 1
            if counted:
                self.stats.status(status)

    def handle(self, req):
        area = area_of(req.path)
        if area == "control":
            return self.control.handle(req)
        with self.lock:
            self.stats.request(req)
            kind = self.faults.take(req)
            try:
                if kind is not None:
                    resp = fault_response(kind, req, self)
                elif area == "tado_auth":
                    resp = self.tado.handle_auth(req)
                elif area == "tado_api":
                    resp = self.tado.handle_api(req)
                elif area == "tibber_auth":
                    resp = self.tibber.handle_auth(req)
                elif area == "tibber_api":
                    resp = self.tibber.handle_api(req)
                else:
                    resp = json_response(404, {"error": "not_found"})
            except NotFound as e:
                resp = e.response
            latency = self.latency_ms
        if latency:
            time.sleep(latency / 1000)
        return resp


# ---------------------------------------------------------------- server

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "smarthomefs-cloud-emulator/1"
    sys_version = ""
    timeout = 300  # idle keep-alive connections

    def version_string(self):
        return self.server_version

    def date_time_string(self, timestamp=None):
        """Date tells the emulator's clock, as a cloud's tells its own."""
        return email.utils.formatdate(now() if timestamp is None else timestamp, usegmt=True)

    def do_GET(self):
        self.dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
                if len(body) > 1 << 20:
                    raise ValueError("body too large")
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > 1 << 20:
            raise ValueError("bad Content-Length")
        return self.rfile.read(length) if length else b""

    def dispatch(self):
        world = self.server.world
        path = urllib.parse.urlsplit(self.path).path
        try:
            body = self.read_body()
        except ValueError:
            self.close_connection = True
            self.send(Response(400, b"bad request body", "text/plain"))
            log(f"{self.command} {path} 400")
            return
        req = Request(self.command, self.path, self.headers, body)
        counted = area_of(req.path) != "control"
        if counted and not getattr(self, "connection_counted", False):
            # Counted at its first cloud request, so control calls never count.
            self.connection_counted = True
            with world.lock:
                world.stats.connections += 1
                world.stats.tls_resumed += int(self.connection.session_reused)
        world.begin()
        status = "error"
        try:
            try:
                resp = world.handle(req)
            except Exception as e:  # an emulator bug: answer 500, keep serving
                log(f"internal error: {type(e).__name__}: {e}")
                resp = json_response(500, {"error": "emulator_error"})
            status = "drop" if resp.drop else str(resp.status)
            self.send(resp)
        finally:
            world.end(status, counted)
            log(f"{self.command} {req.path} {status}")

    def send(self, resp):
        if resp.drop:
            self.close_connection = True
            return
        self.send_response(resp.status)
        for k, v in resp.headers:
            self.send_header(k, v)
        length = resp.declared_length if resp.declared_length is not None else len(resp.body)
        self.send_header("Content-Length", str(length))
        # headers and body in one write: one TLS record, no Nagle/delayed-ACK stalls
        self._headers_buffer.append(b"\r\n")
        head = b"".join(self._headers_buffer)
        self._headers_buffer = []
        try:
            if resp.stream is not None:
                self.wfile.write(head)
                for chunk in resp.stream:
                    self.wfile.write(chunk)
            else:
                self.wfile.write(head + resp.body)
            self.wfile.flush()
            if resp.after == "stall":
                self.stall()
        except OSError:  # the client went away (includes ssl.SSLError)
            self.close_connection = True
        if resp.after:
            self.close_connection = True

    def stall(self):
        """Hang until the client closes the connection, 60 s pass or we stop."""
        deadline = time.monotonic() + 60
        sock = self.connection
        sock.settimeout(0.5)
        while time.monotonic() < deadline and not self.server.world.stopping.is_set():
            ready, _, _ = select.select([sock], [], [], 0.2)
            if ready:
                try:
                    if not sock.recv(4096):
                        return
                except (ssl.SSLWantReadError, socket.timeout):
                    continue
                except OSError:
                    return

    def log_request(self, code="-", size="-"):
        pass  # dispatch() logs one sanitized line per request

    def log_error(self, format, *args):
        # never the args: they may quote the request line (query strings carry codes)
        code = f" {args[0]}" if args and isinstance(args[0], int) else ""
        log(f"request error: {format.split('%')[0].strip()}{code}")


class TLSServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address, context, world):
        self.context = context
        self.world = world
        super().__init__(address, Handler)

    def finish_request(self, request, client_address):
        # TLS handshake in the worker thread, so a slow client cannot block accept().
        request.settimeout(10)
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            log(f"tls handshake failed: {getattr(e, 'reason', None) or type(e).__name__}")
            return
        try:
            tls.settimeout(Handler.timeout)
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            tls.close()

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            log(f"connection error: {type(exc).__name__}")


def parse_args(argv):
    p = argparse.ArgumentParser(description="Emulated tado + Tibber clouds (tests only).")
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file")
    p.add_argument("--tado-homes", type=int, default=1)
    p.add_argument("--tado-zones", type=int, default=3)
    p.add_argument("--tado-devices", type=int, default=4)
    p.add_argument("--tado-x-homes", type=int, default=0)
    p.add_argument("--tado-x-rooms", type=int, default=3)
    p.add_argument("--tibber-homes", type=int, default=2)
    p.add_argument("--tibber-devices", type=int, default=4)
    p.add_argument("--access-ttl", type=int, default=600)
    p.add_argument("--tibber-access-ttl", type=int, default=3600)
    p.add_argument("--refresh-ttl", type=int, default=30 * 86400,
                   help="tado refresh token lifetime from issue (s)")
    p.add_argument("--quota", type=int, default=100)
    p.add_argument("--quota-window", type=int, default=86400)
    # 11:24 UTC: when the reset was observed for one account (tado_ce #246); others differ.
    p.add_argument("--quota-reset-s", type=int, default=11 * 3600 + 24 * 60)
    p.add_argument("--device-interval", type=int, default=5)
    p.add_argument("--device-expires-in", type=int, default=300)
    p.add_argument("--auto-approve", action="store_true")
    p.add_argument("--tibber-client-id", default="smarthomefs-test-client")
    p.add_argument("--tibber-client-secret", default="smarthomefs-test-secret")
    p.add_argument("--tibber-redirect-uri", action="append", default=[],
                   help="exact redirect URI to accept (repeatable); default: any "
                        "http://127.0.0.1:<port>/callback or http://localhost:<port>/callback")
    return p.parse_args(argv)


def main(argv=None):
    opts = parse_args(argv)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(opts.cert, opts.key)
    world = World(opts)
    server = TLSServer((opts.host, opts.port), context, world)
    port = server.server_address[1]

    def stop(signum, frame):
        world.stopping.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if opts.port_file:
        tmp = f"{opts.port_file}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(f"{port}\n")
        os.replace(tmp, opts.port_file)
    print(f"listening on https://{opts.host}:{port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        world.stopping.set()
        server.server_close()
        if opts.port_file:
            try:
                os.unlink(opts.port_file)
            except OSError:
                pass
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
