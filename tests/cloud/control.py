"""Test helpers for the emulated cloud (tests/cloud/cloud.py).

    from control import start_cloud
    cloud = start_cloud(tmp_path, auto_approve=True, quota=5)
    try:
        ... point smarthomefs at cloud.url, trust cloud.cafile ...
        cloud.control.fail(kind="503", count=2, path="/zoneStates")
        assert cloud.control.stats()["status_counts"]["503"] == 2
    finally:
        cloud.stop()

Standard library only.
"""

import base64
import hashlib
import html.parser
import http.client
import itertools
import json
import os
import secrets
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
TADO_CLIENT_ID = "1bb50063-6b0c-4d11-bd99-387f4a91cc46"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
TIBBER_CLIENT_ID = "smarthomefs-test-client"       # cloud.py defaults
TIBBER_CLIENT_SECRET = "smarthomefs-test-secret"
TIBBER_ALL_SCOPES = ("openid profile email offline_access data-api-user-read data-api-homes-read "
                     "data-api-vehicles-read data-api-chargers-read data-api-thermostats-read "
                     "data-api-energy-systems-read")


class Reply:
    """A raw HTTP answer: status, headers (case-insensitive), body bytes."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Reply {self.status} {len(self.body)} bytes>"


class _Form(html.parser.HTMLParser):
    """Collects the hidden inputs of a page (enough for the consent pages)."""

    def __init__(self):
        super().__init__()
        self.fields = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "input" and a.get("type") == "hidden":
            self.fields[a.get("name")] = a.get("value", "")


def pkce_pair():
    """-> (code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


class Cloud:
    """Client of the control interface (plus raw requests and login shortcuts)."""

    def __init__(self, url, cafile, timeout=10):
        self.url = url.rstrip("/")
        self.cafile = cafile
        self.timeout = timeout
        self.context = ssl.create_default_context(cafile=cafile)
        split = urllib.parse.urlsplit(self.url)
        self.host, self.port = split.hostname, split.port

    # ---- plumbing

    def call(self, method, path, body=None):
        """A control call: JSON in, JSON out. Raises urllib.error.HTTPError on != 2xx."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, context=self.context, timeout=self.timeout) as r:
            return json.loads(r.read() or b"null")

    def request(self, method, path, body=None, headers=None, timeout=None):
        """A raw request (no redirects followed, no User-Agent added). body: bytes, str
        or dict (form-encoded)."""
        if isinstance(body, dict):
            body = urllib.parse.urlencode(body)
            headers = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        if isinstance(body, str):
            body = body.encode()
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.context,
                                           timeout=timeout or self.timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return Reply(r.status, r.headers, r.read())
        finally:
            conn.close()

    # ---- control API

    def stats(self):
        return self.call("GET", "/_control/stats")

    def reset_stats(self):
        return self.call("POST", "/_control/reset_stats", {})

    def tokens(self):
        return self.call("GET", "/_control/tokens")

    def pending(self):
        return self.call("GET", "/_control/pending")

    def approve(self, user_code=None):
        return self.call("POST", "/_control/approve", {"user_code": user_code} if user_code else {})

    def deny(self, user_code=None):
        return self.call("POST", "/_control/deny", {"user_code": user_code} if user_code else {})

    def config(self, **settings):
        return self.call("POST", "/_control/config", settings)

    def get_config(self):
        return self.call("GET", "/_control/config")

    def latency(self, ms):
        return self.call("POST", "/_control/latency", {"ms": ms})

    def fail(self, kind="500", count=1, path=None):
        return self.call("POST", "/_control/fail", {"count": count, "kind": kind, "path": path})

    def clear_faults(self):
        return self.call("POST", "/_control/fail", {"count": 0})

    def faults(self):
        return self.call("GET", "/_control/fail")["rules"]

    def expire_tokens(self):
        return self.call("POST", "/_control/expire_tokens", {})

    def revoke_refresh_tokens(self, cloud=None):
        return self.call("POST", "/_control/revoke_refresh_tokens",
                         {"cloud": cloud} if cloud else {})

    def reset_quota(self):
        return self.call("POST", "/_control/reset_quota", {})

    def tado_zone_temperature(self, home, zone, celsius, humidity=None):
        body = {"home": home, "zone": zone, "celsius": celsius}
        if humidity is not None:
            body["humidity"] = humidity
        return self.call("POST", "/_control/tado/zone_temperature", body)

    def tado_generation(self, home, generation):
        return self.call("POST", "/_control/tado/generation",
                         {"home": home, "generation": generation})

    def tado_invite(self, home):
        """The second tado user accepts an invitation to @home (tado's "Invite People to
        Join Home"): its login sees the home too."""
        return self.call("POST", "/_control/tado/invite", {"home": home})

    def tado_login_as(self, user):
        """Device codes asked for from now on are approved by tado user "first" (every
        home) or "second" (the homes it was invited to)."""
        return self.call("POST", "/_control/tado/login_as", {"user": user})

    def tado_zone_created(self, home, zone, days_ago):
        """Say zone was created days_ago days before the emulator's now (its first day report)."""
        return self.call("POST", "/_control/tado/zone_created",
                         {"home": home, "zone": zone, "days_ago": days_ago})

    def tado_remove_zone(self, home, zone):
        return self.call("POST", "/_control/tado/remove_zone", {"home": home, "zone": zone})

    def tibber_capability(self, device, capability, value):
        return self.call("POST", "/_control/tibber/capability",
                         {"device": device, "capability": capability, "value": value})

    def tibber_online(self, device, online):
        return self.call("POST", "/_control/tibber/online", {"device": device, "online": online})

    def tibber_remove_device(self, device):
        return self.call("POST", "/_control/tibber/remove_device", {"device": device})

    def tibber_add_home(self, devices, detail_bytes=0):
        """A new Tibber home with @devices chargers, details padded to @detail_bytes;
        -> its id."""
        return self.call("POST", "/_control/tibber/add_home",
                         {"devices": devices, "detail_bytes": detail_bytes})["home"]

    def tibber_add_device(self, home, kind="charger"):
        """A new device in @home; -> its id."""
        return self.call("POST", "/_control/tibber/add_device",
                         {"home": home, "kind": kind})["device"]

    def data(self):
        return self.call("GET", "/_control/data")

    def clock(self):
        """The emulator's clock: {"now_s", "iso", "offset_s"}."""
        return self.call("GET", "/_control/clock")

    def advance_clock(self, seconds):
        """Move the emulator's one clock forward (token lifetimes, the quota's reset)."""
        return self.call("POST", "/_control/clock", {"advance_s": seconds})

    def reset(self):
        """Back to the state right after start: data, tokens, config, faults, stats."""
        return self.call("POST", "/_control/reset", {})

    def wait_pending(self, timeout=10):
        """Wait until a tado login is pending; -> its user code."""
        deadline = time.monotonic() + timeout
        while True:
            codes = self.pending()
            if codes:
                return codes[0]
            if time.monotonic() > deadline:
                raise TimeoutError("no pending tado login")
            time.sleep(0.02)

    # ---- browser stand-ins and login shortcuts

    def tibber_consent(self, authorize_url, decision="allow"):
        """Open a Tibber authorize URL like a browser, click allow/deny on the consent
        page and return the redirect Location (not followed)."""
        split = urllib.parse.urlsplit(authorize_url)
        r = self.request("GET", split.path + "?" + split.query, headers={"User-Agent": "browser"})
        if r.status == 302:  # auto-approve
            return r.headers["Location"]
        if r.status != 200:
            raise RuntimeError(f"authorize page answered {r.status}: {r.body[:200]!r}")
        form = _Form()
        form.feed(r.body.decode())
        r = self.request("POST", "/connect/authorize/decision",
                         {"request_id": form.fields["request_id"], "decision": decision},
                         headers={"User-Agent": "browser"})
        if r.status != 302:
            raise RuntimeError(f"consent answered {r.status}")
        return r.headers["Location"]

    def tado_login(self, scope="offline_access"):
        """Device-code login approved through the control API; -> token response."""
        r = self.request("POST", "/oauth2/device_authorize",
                         {"client_id": TADO_CLIENT_ID, "scope": scope})
        dev = r.json()
        if dev["user_code"] in self.pending():
            self.approve(dev["user_code"])
        r = self.request("POST", "/oauth2/token", {"client_id": TADO_CLIENT_ID,
                                                   "device_code": dev["device_code"],
                                                   "grant_type": DEVICE_GRANT})
        if r.status != 200:
            raise RuntimeError(f"tado login failed: {r.status} {r.body[:200]!r}")
        return r.json()

    def tibber_login(self, scope=TIBBER_ALL_SCOPES, client_id=TIBBER_CLIENT_ID,
                     client_secret=TIBBER_CLIENT_SECRET,
                     redirect_uri="http://127.0.0.1:8765/callback"):
        """Authorization-code + PKCE login through the consent page; -> token response."""
        verifier, challenge = pkce_pair()
        url = self.url + "/connect/authorize?" + urllib.parse.urlencode({
            "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
            "scope": scope, "state": "st", "code_challenge": challenge,
            "code_challenge_method": "S256"})
        location = self.tibber_consent(url)
        code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))["code"]
        r = self.request("POST", "/connect/token", {
            "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "client_id": client_id, "client_secret": client_secret, "code_verifier": verifier})
        if r.status != 200:
            raise RuntimeError(f"tibber login failed: {r.status} {r.body[:200]!r}")
        return r.json()


class CloudProcess:
    """A running cloud.py. Also a context manager."""

    def __init__(self, proc, url, port, certdir, log_path, port_file):
        self.proc = proc
        self.url = url
        self.port = port
        self.certdir = certdir
        self.cafile = os.path.join(certdir, "ca.pem")
        self.log_path = log_path
        self.port_file = port_file
        self.control = Cloud(url, self.cafile)

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self, timeout=5):
        """SIGTERM and wait; SIGKILL if it does not exit in time. -> exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


_counter = itertools.count(1)


def make_certs(certdir):
    if not os.path.exists(os.path.join(certdir, "server.pem")):
        subprocess.run(["sh", os.path.join(HERE, "make_certs.sh"), str(certdir)], check=True)


def start_cloud(tmpdir, timeout=10, **options):
    """Start cloud.py on a free port. Options are the CLI flags with '_' for '-':
    start_cloud(d, tado_homes=2, auto_approve=True, tibber_redirect_uri=["http://..."]).
    Certificates go to tmpdir/certs (made once); the log to tmpdir/cloud-N.log."""
    tmpdir = str(tmpdir)
    certdir = os.path.join(tmpdir, "certs")
    make_certs(certdir)
    n = next(_counter)
    port_file = os.path.join(tmpdir, f"cloud-{os.getpid()}-{n}.port")
    log_path = os.path.join(tmpdir, f"cloud-{os.getpid()}-{n}.log")
    if os.path.exists(port_file):
        os.unlink(port_file)
    argv = [PYTHON, os.path.join(HERE, "cloud.py"),
            "--cert", os.path.join(certdir, "server.pem"),
            "--key", os.path.join(certdir, "server.key"), "--port-file", port_file]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, (list, tuple)):
            for v in value:
                argv += [flag, str(v)]
        else:
            argv += [flag, str(value)]
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(port_file) as f:
                port = int(f.read())
            break
        except (FileNotFoundError, ValueError):
            pass
        if proc.poll() is not None:
            with open(log_path, errors="replace") as f:
                raise RuntimeError(f"cloud.py exited with {proc.returncode}:\n{f.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise TimeoutError("cloud.py did not write its port file")
        time.sleep(0.01)
    host = options.get("host") or "127.0.0.1"
    return CloudProcess(proc, f"https://{host}:{port}", port, certdir, log_path, port_file)
