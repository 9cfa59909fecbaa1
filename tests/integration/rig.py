"""The test rig: a private Secret Service, the emulated cloud, and smarthomefs run for
real (CLI and FUSE mounts), with every output captured so tests can assert that no
token ever appears in it."""

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "cloud"))

import control  # noqa: E402  (the emulated cloud's client)

BIN = Path(os.environ.get("SMARTHOMEFS_BIN", ROOT / "build" / "smarthomefs"))


def wait_until(predicate, timeout=10.0, what="condition"):
    """Polls @predicate until it is true; fails the test with @what after @timeout s.
    This waits for a condition to become true; it never stands in for one."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def read(path):
    """The whole content of @path, in one open/read/close, as a user's `cat` does."""
    with open(path, "rb") as f:
        return f.read()


def read_error(path):
    """The errno of reading @path and how long it took to get it (the read must fail)."""
    start = time.monotonic()
    try:
        read(path)
    except OSError as e:
        return e.errno, time.monotonic() - start
    raise AssertionError(f"reading {path} succeeded; it was expected to fail")


def stored_tokens(rig, account="tado"):
    """The token set the keyring holds for @account (parsed; never print it)."""
    secret = rig.keyring.lookup(account)
    assert secret, f"no secret stored for {account}"
    return json.loads(secret)


def run_together(target, args_list):
    """Runs target(*args) for every args of @args_list in threads at once; returns when
    all have ended."""
    threads = [threading.Thread(target=target, args=tuple(args)) for args in args_list]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


class Keyring:
    """A private D-Bus session bus with an unlocked gnome-keyring on it."""

    def __init__(self, base: Path):
        self.base = base
        self.runtime = base / "runtime"
        self.home = base / "home"
        self.runtime.mkdir(mode=0o700, parents=True)
        self.home.mkdir(parents=True)
        self.env = dict(os.environ)
        for var in ("DBUS_SESSION_BUS_ADDRESS", "DISPLAY", "WAYLAND_DISPLAY",
                    "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
            self.env.pop(var, None)
        self.env.update(HOME=str(self.home), XDG_RUNTIME_DIR=str(self.runtime))
        self.dbus = subprocess.Popen(
            ["dbus-daemon", "--session", "--nofork", "--print-address=1"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=self.env, text=True)
        address = self.dbus.stdout.readline().strip()
        assert address, "dbus-daemon gave no address"
        self.env["DBUS_SESSION_BUS_ADDRESS"] = address
        # In the foreground, so that stop() ends this daemon and no other run's.
        self.daemon = subprocess.Popen(
            ["gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=self.env)
        self.daemon.stdin.write(b"test-password")
        self.daemon.stdin.close()
        wait_until(self._answers, 20, "the keyring to answer")

    def _answers(self):
        r = subprocess.run(["secret-tool", "search", "--all", "rig", "probe"], env=self.env,
                           capture_output=True, timeout=10)
        return r.returncode in (0, 1) and b"Cannot" not in r.stderr

    def lookup(self, account, provider=None):
        """The secret stored for @account, or None."""
        args = ["secret-tool", "lookup", "account", account]
        if provider:
            args += ["provider", provider]
        r = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=10)
        return r.stdout if r.returncode == 0 and r.stdout else None

    def clear(self):
        for acct in ("tado", "tibber", "tado:second", "tibber:second"):
            subprocess.run(["secret-tool", "clear", "account", acct], env=self.env,
                           capture_output=True, timeout=10)

    def stop(self):
        for proc in (self.daemon, self.dbus):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


TIBBER_CLIENT_ID = control.TIBBER_CLIENT_ID
TIBBER_CLIENT_SECRET = control.TIBBER_CLIENT_SECRET


class TibberLogin:
    """`smarthomefs login tibber --no-browser` running in the background, the client
    secret given on stdin. Once started, .url is the authorize link it printed; the
    test then plays the browser and calls finish()."""

    def __init__(self, rig, args, secret):
        self.rig = rig
        cmd = [str(BIN), "login", "tibber", *args, "-o", ",".join(rig.options("tibber"))]
        self.proc = subprocess.Popen(cmd, env=rig.env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.proc.stdin.write((secret or "") + "\n")
        self.proc.stdin.close()
        self.out, self.err = [], []
        self.readers = [threading.Thread(target=self._drain, args=(f, acc), daemon=True)
                        for f, acc in ((self.proc.stdout, self.out),
                                       (self.proc.stderr, self.err))]
        for t in self.readers:
            t.start()
        self.url = wait_until(lambda: self._link() or self.proc.poll() is not None, 20,
                              "the authorize link on stdout")
        if self.url is True:
            self.finish()
            raise AssertionError(f"login ended before printing a link: {''.join(self.err)}")

    @staticmethod
    def _drain(stream, acc):
        for line in stream:
            acc.append(line)

    def _link(self):
        for line in list(self.out):
            if line.strip().startswith("https://") and "/connect/authorize?" in line:
                return line.strip()
        return None

    def query(self):
        """The authorize link's query parameters."""
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.url).query))

    def finish(self, timeout=30):
        """Waits for the CLI to exit; -> (exit code, stdout, stderr)."""
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
        for t in self.readers:
            t.join(5)
        out, err = "".join(self.out), "".join(self.err)
        self.rig.outputs += [out, err]
        return self.proc.returncode, out, err


class Mount:
    """smarthomefs mounted in the foreground, unmounted on stop whatever happened."""

    def __init__(self, rig, account, mountpoint, options, log_path, wrapper=()):
        self.rig = rig
        self.path = Path(mountpoint)
        self.path.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self.log = open(log_path, "ab")
        args = [*wrapper, str(BIN), "mount", account, str(self.path), "-f"]
        if options:
            args += ["-o", ",".join(options)]
        self.proc = subprocess.Popen(args, env=rig.env, stdout=self.log, stderr=self.log,
                                     stdin=subprocess.DEVNULL)
        wait_until(lambda: self.path.is_mount() or self.proc.poll() is not None,
                   60 if wrapper else 20,
                   f"{self.path} to be mounted")
        if not self.path.is_mount():
            self.log.close()
            raise AssertionError(f"mount failed: {Path(log_path).read_text()}")

    def __truediv__(self, rel):
        return self.path / rel

    def stop(self, timeout=15):
        if self.path.is_mount():
            r = subprocess.run(["fusermount3", "-u", str(self.path)], capture_output=True)
            if r.returncode != 0:
                subprocess.run(["fusermount3", "-uz", str(self.path)], capture_output=True)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()
        return self.proc.returncode


def follow_redirect(location, timeout=10):
    """GETs @location (our plain-HTTP loopback listener) like a browser following the
    consent's redirect; -> (status, body text)."""
    try:
        with urllib.request.urlopen(location, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


class Rig:
    """One test's world: a home directory, the keyring, the cloud, and what ran."""

    def __init__(self, tmp: Path, keyring: Keyring, cloud):
        self.tmp = tmp
        self.keyring = keyring
        self.cloud = cloud
        self.home = tmp / "home"
        self.home.mkdir()
        self.env = dict(keyring.env)
        self.env.update(HOME=str(self.home),
                        XDG_CONFIG_HOME=str(self.home / ".config"),
                        XDG_CACHE_HOME=str(self.home / ".cache"),
                        XDG_STATE_HOME=str(self.home / ".local" / "state"))
        self.mounts = []
        self.outputs = []  # every stdout/stderr text we saw, for the token check
        self.logs = []

    def options(self, provider="tado", extra=()):
        """The -o options that point smarthomefs at the emulated cloud."""
        api = {"tado": "/api/v2", "tibber": "/v1"}[provider]
        hops = [f"hops_url={self.cloud.url}/hops"] if provider == "tado" else []
        return [f"api_url={self.cloud.url}{api}", *hops, f"auth_url={self.cloud.url}",
                f"cafile={self.cloud.cafile}", *extra]

    def run(self, *args, input=None, options=None, provider="tado", check=True, timeout=60,
            env=None):
        """Runs the smarthomefs CLI; returns the CompletedProcess (text)."""
        cmd = [str(BIN), *args]
        opts = self.options(provider, options or ()) if options is not False else []
        if opts:
            cmd += ["-o", ",".join(opts)]
        r = subprocess.run(cmd, input=input, env=env or self.env, capture_output=True,
                           text=True, timeout=timeout)
        self.outputs += [r.stdout, r.stderr]
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {r.returncode}: {r.stderr}")
        return r

    def login_tado(self, account="tado", extra=()):
        """Logs in through the device-code flow, the cloud approving at once."""
        self.cloud.control.config(auto_approve=True, device_interval=0)
        args = ["login", account.split(":")[0]]
        if ":" in account:
            args += ["--account", account.split(":")[1]]
        return self.run(*args, options=list(extra))

    def start_login_tibber(self, *args, secret=TIBBER_CLIENT_SECRET,
                           client_id=TIBBER_CLIENT_ID):
        """Starts `smarthomefs login tibber --no-browser`; -> a TibberLogin whose .url
        the test opens as the browser would."""
        return TibberLogin(self, ["--client-id", client_id, "--no-browser", *args], secret)

    def login_tibber(self, *args, **kw):
        """Logs in to Tibber, the consent allowed by a stand-in browser (control's
        tibber_consent) and the redirect followed to our listener."""
        login = self.start_login_tibber(*args, **kw)
        location = self.cloud.control.tibber_consent(login.url, "allow")
        follow_redirect(location)
        code, out, err = login.finish()
        if code != 0:
            raise AssertionError(f"tibber login exited {code}: {err}")
        return out

    def mount(self, account="tado", provider=None, extra=(), name="home-data", wrapper=()):
        provider = provider or account.split(":")[0]
        log = self.tmp / f"mount-{len(self.mounts)}.log"
        self.logs.append(log)
        m = Mount(self, account, self.tmp / name, self.options(provider, extra), log, wrapper)
        self.mounts.append(m)
        return m

    def mount_tibber(self, *extra):
        """Logs in to Tibber and mounts it with @extra options; the cloud's request
        counts start at zero after the mount."""
        self.login_tibber()
        m = self.mount("tibber", extra=list(extra))
        self.cloud.control.reset_stats()
        return m

    def secrets_seen(self):
        """Every token and secret the cloud ever issued or knows."""
        tokens = self.cloud.control.tokens()
        found = set(tokens.get("live_refresh_tokens", []))
        found |= set(tokens.get("spent_refresh_tokens", []))
        found |= set(tokens.get("expired_refresh_tokens", []))
        found |= set(tokens.get("access_tokens", []))
        found.add(TIBBER_CLIENT_SECRET)
        return {t for t in found if t}

    def assert_no_secret_leaked(self):
        texts = list(self.outputs) + [p.read_text(errors="replace") for p in self.logs
                                      if p.exists()]
        for secret in self.secrets_seen():
            for t in texts:
                assert secret not in t, "a token appeared in an output or log"

    def assert_no_sanitizer_report(self):
        """A sanitizer build reports to the daemon's stderr, which is the mount log; so
        does GLib when a precondition of its API fails (a bug of ours, in any build)."""
        for p in self.logs:
            text = p.read_text(errors="replace") if p.exists() else ""
            for mark in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                         "-CRITICAL **", "-WARNING **"):
                assert mark not in text, f"{p.name}: {text[max(0, text.index(mark) - 200):][:3000]}"

    def stop(self):
        for m in reversed(self.mounts):
            m.stop()
