"""The test rig: a private Secret Service, the emulated cloud, and smarthomefs run for
real (CLI and FUSE mounts), with every output captured so tests can assert that no
token ever appears in it."""

import contextlib
import fcntl
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

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

    def __init__(self, base: Path, user=None):
        """Root's keyring, or with @user (a DesktopUser) that user's own: the bus and
        the daemon run as the user, in a runtime directory that is the user's."""
        self.base = base
        self.prefix = user.prefix if user else []
        self.runtime = user.runtime if user else base / "runtime"
        self.home = base / "home"
        self.runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
        if user:
            user.mkdirs(self.home)
        else:
            self.home.mkdir(parents=True)
        self.env = dict(user.env) if user else dict(os.environ)
        for var in ("DBUS_SESSION_BUS_ADDRESS", "DISPLAY", "WAYLAND_DISPLAY",
                    "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
            self.env.pop(var, None)
        self.env.update(HOME=str(self.home), XDG_RUNTIME_DIR=str(self.runtime))
        self.dbus = subprocess.Popen(
            [*self.prefix, "dbus-daemon", "--session", "--nofork", "--print-address=1"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=self.env, text=True)
        address = self.dbus.stdout.readline().strip()
        assert address, "dbus-daemon gave no address"
        self.env["DBUS_SESSION_BUS_ADDRESS"] = address
        # In the foreground, so that stop() ends this daemon and no other run's.
        self.daemon = subprocess.Popen(
            [*self.prefix, "gnome-keyring-daemon", "--foreground", "--unlock",
             "--components=secrets"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=self.env)
        self.daemon.stdin.write(b"test-password")
        self.daemon.stdin.close()
        wait_until(self._answers, 20, "the keyring to answer")

    def _answers(self):
        """Whether a secret can be stored: our daemon owns the Secret Service's name (asked
        without a call to the service, which would make the bus start a second daemon of
        its own, without our password, that could win the name), and its login
        collection (which --unlock makes a moment later) exists, unlocked."""
        r = subprocess.run([*self.prefix, "dbus-send", "--session", "--print-reply",
                            "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus",
                            "org.freedesktop.DBus.NameHasOwner",
                            "string:org.freedesktop.secrets"], env=self.env,
                           capture_output=True, text=True, timeout=10)
        if "boolean true" not in r.stdout:
            return False
        r = subprocess.run([*self.prefix, "secret-tool", "store", "--label=rig probe", "rig",
                            "probe"], input=b"probe", env=self.env, capture_output=True,
                           timeout=10)
        if r.returncode != 0:
            return False
        subprocess.run([*self.prefix, "secret-tool", "clear", "rig", "probe"], env=self.env,
                       capture_output=True, timeout=10)
        return True

    def lookup(self, account, provider=None):
        """The secret stored for @account, or None."""
        args = [*self.prefix, "secret-tool", "lookup", "account", account]
        if provider:
            args += ["provider", provider]
        r = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=10)
        return r.stdout if r.returncode == 0 and r.stdout else None

    def clear(self):
        """Every login of every account: a test's logins must not join the next test's
        mount of all accounts."""
        for provider in ("tado", "tibber"):
            subprocess.run([*self.prefix, "secret-tool", "clear", "provider", provider],
                           env=self.env, capture_output=True, timeout=10)

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
    """smarthomefs mounted in the foreground, unmounted on stop whatever happened; as
    the rig's user (root, or a UserRig's desktop user), through the rig's is_mount,
    mkdirs and unmount."""

    def __init__(self, rig, account, mountpoint, options, log_path, wrapper=()):
        self.rig = rig
        self.path = Path(mountpoint)
        rig.mkdirs(self.path)
        self.log_path = log_path
        self.log = open(log_path, "ab")
        # No account: every account logged in, in one tree.
        args = [*wrapper, *rig.prefix, str(BIN), "mount", *([account] if account else []),
                str(self.path), "-f"]
        if options:
            args += ["-o", ",".join(options)]
        self.proc = subprocess.Popen(args, env=rig.env, stdout=self.log, stderr=self.log,
                                     stdin=subprocess.DEVNULL)
        wait_until(lambda: rig.is_mount(self.path) or self.proc.poll() is not None,
                   60 if wrapper else 20,
                   f"{self.path} to be mounted")
        if not rig.is_mount(self.path):
            self.log.close()
            raise AssertionError(f"mount failed: {Path(log_path).read_text()}")

    def __truediv__(self, rel):
        return self.path / rel

    def stop(self, timeout=15):
        if self.rig.is_mount(self.path):
            self.rig.unmount(self.path)
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
        self.prefix = []  # what runs a command as the rig's user (none: root)
        self.mounts = []
        self.outputs = []  # every stdout/stderr text we saw, for the token check
        self.logs = []
        # A sanitized run's options (scripts/test's) reach root's commands with the rest
        # of the environment; a daemon of theirs (mount(8) and fstab, `mount` without -f)
        # writes its reports to /dev/null, its stderr, so they go to files in a directory
        # of this test's. Its log_path also names the processes the test started
        # (daemons()). A run without them (a plain pytest) keeps its environment as is.
        self.reports = None
        if any(os.environ.get(var) for var in SANITIZER_VARS):
            self.reports = Path(tempfile.mkdtemp(prefix="sanitizer-", dir=tmp))
            self.env.update(sanitizer_env(self.reports / "report"))

    @staticmethod
    def is_mount(path):
        return Path(path).is_mount()

    @staticmethod
    def mkdirs(path):
        Path(path).mkdir(parents=True, exist_ok=True)

    @staticmethod
    def unmount(path):
        """fusermount3 -u, lazily (-uz) when busy."""
        if subprocess.run(["fusermount3", "-u", str(path)], capture_output=True).returncode:
            subprocess.run(["fusermount3", "-uz", str(path)], capture_output=True)

    def options(self, provider="tado", extra=()):
        """The -o options that point smarthomefs at the emulated cloud."""
        api = {"tado": "/api/v2", "tibber": "/v1"}[provider]
        hops = [f"hops_url={self.cloud.url}/hops"] if provider == "tado" else []
        # History (31 days by default) is off unless a test asks for it: a walk of the
        # tree would otherwise read a month of periods per device (test_history.py).
        return [f"api_url={self.cloud.url}{api}", *hops, f"auth_url={self.cloud.url}",
                f"cafile={self.cloud.cafile}", "history_days=0", *extra]

    def run(self, *args, input=None, options=None, provider="tado", check=True, timeout=60,
            env=None):
        """Runs the smarthomefs CLI; returns the CompletedProcess (text)."""
        cmd = [*self.prefix, str(BIN), *args]
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

    def config_text(self, accounts, extra=None):
        """A config file with a section per account of @accounts pointing it at the
        emulated cloud, with @extra[account] options added to its section."""
        text = ""
        for account in accounts:
            opts = self.options(account.split(":")[0], (extra or {}).get(account, ()))
            text += f"[{account}]\n" + "".join(
                f"{o.replace('=', ' = ', 1)}\n" if "=" in o else f"{o} = true\n" for o in opts)
        return text

    def write_accounts_config(self, accounts, extra=None):
        path = self.home / ".config/smarthomefs/config"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.config_text(accounts, extra))
        return path

    def mount_all(self, accounts, extra=None, options=(), name="home-data"):
        """Mounts every account logged in (no ACCOUNT), each of @accounts given its
        section of the config file (with @extra[account]); @options go to -o."""
        self.write_accounts_config(accounts, extra)
        log = self.tmp / f"mount-{len(self.mounts)}.log"
        self.logs.append(log)
        m = Mount(self, None, self.home / name, list(options), log)
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

    def daemons(self):
        """The processes this test started that are still there (mount daemons): those
        whose environment holds its log_path (read as root, in any mount namespace)."""
        if not self.reports:
            return []
        mark = f"log_path={self.reports / 'report'}".encode()
        pids = []
        for p in Path("/proc").iterdir():
            try:
                if p.name.isdigit() and mark in (p / "environ").read_bytes():
                    pids.append(int(p.name))
            except OSError:
                pass
        return pids

    def assert_no_sanitizer_report(self):
        """A sanitizer build reports to the file its log_path names, when the run set
        sanitizer options (self.reports), and else to the daemon's stderr, which is the
        mount log, and to a command's stderr; so does GLib when a precondition of its API
        fails (a bug of ours, in any build). ThreadSanitizer's reports are its WARNING,
        ERROR and FATAL lines, and a thread that "finished with ignores enabled", after
        which TSan ends the process on the spot (src/tsan_glib.c: libfuse's workers). A
        daemon writes its leaks when it exits, after its unmount, so the daemons' exit is
        waited for first; any report file that is not empty is a report."""
        wait_until(lambda: not self.daemons(), 15, "the mount daemons of the test to exit")
        sanitizers = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                      "WARNING: ThreadSanitizer", "ERROR: ThreadSanitizer",
                      "FATAL: ThreadSanitizer", "finished with ignores enabled")
        texts = [(p.name, p.read_text(errors="replace") if p.exists() else "",
                  sanitizers + ("-CRITICAL **", "-WARNING **")) for p in self.logs]
        texts += [("a command's output", t or "", sanitizers) for t in self.outputs]
        for name, text, marks in texts:
            for mark in marks:
                assert mark not in text, f"{name}: {text[max(0, text.index(mark) - 200):][:3000]}"
        for path in sorted(self.reports.iterdir()) if self.reports else ():
            text = read_report(path)
            assert not text, f"{path.name}: {text}"

    def stop(self):
        for m in reversed(self.mounts):
            m.stop()


# The sanitizers' options, read by a sanitizer build of smarthomefs (ASan's reads LSan's
# and UBSan's too).
SANITIZER_VARS = ("ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS")
# Sanitizer reports shown of a report file, at most.
REPORT_SHOWN = 30000


def sanitizer_env(log_prefix: Path):
    """The sanitizer options of this run (scripts/test's, which root's commands inherit
    with the rest of the environment), each with log_path=@log_prefix added: a process
    then writes its report to @log_prefix.<pid> instead of its stderr, which a daemon
    has pointed at /dev/null. The options built into the TSan build stay (TSAN_OPTIONS
    adds to them)."""
    env = {}
    for var in SANITIZER_VARS:
        opts = os.environ.get(var, "")
        env[var] = f"{opts}:log_path={log_prefix}" if opts else f"log_path={log_prefix}"
    return env


def read_report(path: Path):
    """The text of the report file @path, which another user's process wrote (so not
    through a link, and not from a FIFO or device it could have put there instead)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        return f"not a report file we can read: {e}"
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return "not a regular file"
        return f.read(REPORT_SHOWN).decode(errors="replace")


# --- a desktop user ------------------------------------------------------------------
#
# The tests of what a user does run as a non-root user, as on a Debian desktop:
# /dev/fuse mode 0666 (udev's rule there), setuid fusermount3 and mount(8), a D-Bus
# session and gnome-keyring of the user's own, and smarthomefs installed in /usr/bin and
# /usr/sbin. The installed files and the user's /etc/fstab exist only in a private mount
# namespace (SystemNamespace), so that the machine's own /usr and /etc/fstab are never
# written. What must change on the machine itself (the user, /dev/fuse's mode) is
# recorded in STATE_DIR under a lock shared by every test run at once and undone by the
# last run that ends; a run killed before its finalizers is undone by the next one.

STATE_DIR = Path("/run/smarthomefs-tests")
# Debian's PATH for a user: no /usr/sbin, so no mount.smarthomefs on it.
DESKTOP_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/games:/usr/games"


def process_start(pid):
    """@pid's start time in clock ticks since boot, or None when it has gone: with the
    pid, it names one process even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(holder):
    return process_start(holder[0]) == holder[1]


def _pids_of(uid):
    pids = []
    for p in Path("/proc").iterdir():
        try:
            if p.name.isdigit() and p.stat().st_uid == uid:
                pids.append(int(p.name))
        except OSError:
            pass
    return pids


def _kill_uid(uid, timeout=15):
    """Ends the processes of @uid (a test user's: mount daemons, its keyring), by pid, and
    waits until they are gone: userdel refuses a user while a process of theirs is still
    there, and a killed process takes its time to go (a sanitizer build's maps)."""
    deadline = time.monotonic() + timeout
    while (pids := _pids_of(uid)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _delete_user(name):
    try:
        uid = pwd.getpwnam(name).pw_uid
    except KeyError:
        return
    _kill_uid(uid)
    subprocess.run(["userdel", "--remove", name], capture_output=True)
    shutil.rmtree(f"/run/user/{uid}", ignore_errors=True)


class MachineChanges:
    """The changes to the machine that the user tests make, shared by the runs alive."""

    def __init__(self):
        STATE_DIR.mkdir(mode=0o700, exist_ok=True)
        self.lock_path = STATE_DIR / "lock"
        self.state_path = STATE_DIR / "state.json"
        self.me = [os.getpid(), process_start(os.getpid())]

    @contextlib.contextmanager
    def _state(self):
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = json.loads(self.state_path.read_text())
            except (OSError, ValueError):
                state = {"holders": [], "dev_fuse_mode": None, "users": []}
            # Undo what runs that were killed left behind.
            state["holders"] = [h for h in state["holders"] if _alive(h)]
            for u in [u for u in state["users"] if not _alive(u["holder"])]:
                _delete_user(u["name"])
                state["users"].remove(u)
            yield state
            if not state["holders"] and state["dev_fuse_mode"] is not None:
                os.chmod("/dev/fuse", state["dev_fuse_mode"])
                state["dev_fuse_mode"] = None
            tmp = self.state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(state))
            tmp.replace(self.state_path)

    def acquire(self):
        """/dev/fuse 0666 while this run lasts."""
        with self._state() as st:
            if st["dev_fuse_mode"] is None:
                st["dev_fuse_mode"] = stat.S_IMODE(os.stat("/dev/fuse").st_mode)
            st["holders"].append(self.me)
            os.chmod("/dev/fuse", 0o666)

    def release(self):
        with self._state() as st:
            st["holders"] = [h for h in st["holders"] if h != self.me]
            for u in [u for u in st["users"] if u["holder"] == self.me]:
                _delete_user(u["name"])
                st["users"].remove(u)

    def new_user(self, name):
        """Creates @name (recorded first, so that a kill in between leaves no trace)."""
        with self._state() as st:
            st["users"].append({"name": name, "holder": self.me})
            _delete_user(name)
            r = subprocess.run(["useradd", "--create-home", "--user-group", "--shell",
                                "/bin/bash", name], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr


class DesktopUser:
    """A non-root user of this run, shfs-u<pid>, as `adduser` makes one on Debian."""

    def __init__(self, changes):
        self.name = f"shfs-u{os.getpid()}"
        changes.new_user(self.name)
        pw = pwd.getpwnam(self.name)
        self.uid, self.gid, self.home = pw.pw_uid, pw.pw_gid, Path(pw.pw_dir)
        self.home.chmod(0o700)  # adduser's mode on Debian 12: no one else may look in
        self.runtime = Path(f"/run/user/{self.uid}")
        self.runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chown(self.runtime, self.uid, self.gid)
        self.prefix = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}",
                       "--init-groups", "--"]
        self.env = {"PATH": DESKTOP_PATH, "HOME": str(self.home), "USER": self.name,
                    "LOGNAME": self.name, "SHELL": "/bin/bash", "LANG": "C.UTF-8",
                    "XDG_RUNTIME_DIR": str(self.runtime)}

    def mkdirs(self, path: Path):
        """mkdir -p @path as the user (its parents must be the user's or writable)."""
        r = subprocess.run([*self.prefix, "mkdir", "-p", str(path)], capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr

    def write(self, path: Path, data, mode=0o644):
        """Writes @data to @path as the user's own file (parents made)."""
        self.mkdirs(path.parent)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        os.chown(path, self.uid, self.gid)
        os.chmod(path, mode)


class SystemNamespace:
    """A private mount namespace in which smarthomefs looks installed (the tree @dest
    laid over /usr/bin and /usr/sbin) and, with @fstab, that file is /etc/fstab. A
    holder process keeps it alive; commands enter it with nsenter."""

    def __init__(self, dest: Path, dev_upper: Path = None, fstab: Path = None):
        overlays = "; ".join(
            f"mount -t overlay overlay -o lowerdir={dest}/usr/{d}:/usr/{d} /usr/{d}"
            for d in ("bin", "sbin"))
        if dev_upper:
            # A writable /dev of its own, so that a syslog socket can be made at /dev/log.
            (dev_upper / "upper").mkdir()
            (dev_upper / "work").mkdir()
            overlays += (f"; mount -t overlay overlay -o lowerdir=/dev,upperdir={dev_upper}/upper,"
                         f"workdir={dev_upper}/work /dev")
        if fstab:
            overlays += f"; mount --bind {fstab} /etc/fstab"
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-ec",
             f"{overlays}; echo ready; exec cat >/dev/null"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self.holder.stdout.readline()
        assert ready == "ready\n", "could not lay the installed tree over /usr in a namespace"
        self.ns = os.readlink(f"/proc/{self.holder.pid}/ns/mnt")
        self.enter = ["nsenter", "-t", str(self.holder.pid), "-m", "--"]
        self.mountpoints = []

    def run(self, *cmd, env=None, timeout=60, input=None):
        return subprocess.run([*self.enter, *cmd], env=env, timeout=timeout, input=input,
                              capture_output=True, text=True)

    def is_mount(self, path):
        """Whether @path is a mount point in the namespace (read from its mount table, as
        root may not stat a user's FUSE mount)."""
        table = Path(f"/proc/{self.holder.pid}/mountinfo").read_text()
        return any(line.split()[4] == str(path) for line in table.splitlines())

    def daemons(self, uid=None):
        """Processes in the namespace other than its holder (a mount's daemon)."""
        pids = []
        for p in Path("/proc").iterdir():
            if not p.name.isdigit() or int(p.name) == self.holder.pid:
                continue
            try:
                if os.readlink(p / "ns/mnt") == self.ns and \
                        (uid is None or p.stat().st_uid == uid):
                    pids.append(int(p.name))
            except OSError:
                pass
        return pids

    def unmount_all(self, under=None):
        """Unmounts what the tests mounted (@under a directory too), lazily if busy."""
        table = Path(f"/proc/{self.holder.pid}/mountinfo").read_text()
        extra = [line.split()[4] for line in table.splitlines()
                 if under and line.split()[4].startswith(f"{under}/")]
        for mp in [*self.mountpoints, *reversed(extra)]:
            if self.is_mount(mp):
                if self.run("fusermount3", "-u", str(mp)).returncode != 0:
                    self.run("fusermount3", "-uz", str(mp))

    def stop(self):
        self.unmount_all()
        self.holder.stdin.close()
        self.holder.wait(10)


def link_tree(dest: Path):
    """The files `meson install --prefix=/usr` puts in /usr/bin and /usr/sbin, as links
    to the binary under test: enough for a SystemNamespace without a second build."""
    (dest / "usr/bin").mkdir(parents=True)
    (dest / "usr/sbin").mkdir(parents=True)
    (dest / "usr/bin/smarthomefs").symlink_to(BIN)
    (dest / "usr/sbin/mount.smarthomefs").symlink_to("/usr/bin/smarthomefs")
    return dest


class UserSystem:
    """One run's desktop: the user, its keyring, the namespace where it works."""

    def __init__(self, base: Path):
        for tool in ("/usr/bin/fusermount3", "/usr/bin/mount", "/usr/bin/umount"):
            assert os.stat(tool).st_mode & stat.S_ISUID, f"{tool} is not setuid, as on Debian"
        self.changes = MachineChanges()
        self.changes.acquire()
        try:
            self.user = DesktopUser(self.changes)
            # The machine's own fstab, to which a test adds its lines.
            self.fstab = base / "fstab"
            self.machine_fstab = Path("/etc/fstab").read_text()
            self.fstab.write_text(self.machine_fstab)
            self.ns = SystemNamespace(link_tree(base / "installed"), fstab=self.fstab)
            self.keyring = Keyring(self.user.runtime / "keyring", user=self.user)
        except BaseException:
            self.changes.release()
            raise

    def set_fstab(self, *lines):
        """/etc/fstab (in the namespace) is the machine's plus @lines; written in place,
        as the bind mount holds the file, not its name."""
        with open(self.fstab, "r+") as f:
            f.truncate(0)
            f.write(self.machine_fstab + "".join(f"{line}\n" for line in lines))

    def reset(self):
        """Between tests: nothing mounted, no daemon left, an empty home, the fstab back."""
        self.ns.unmount_all(under=self.user.home)
        try:
            wait_until(lambda: not self.ns.daemons(self.user.uid), 15,
                       "the user's mount daemons to exit")
        finally:
            for pid in self.ns.daemons(self.user.uid):
                os.kill(pid, 9)
        for entry in self.user.home.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        self.set_fstab()

    def stop(self):
        try:
            self.keyring.stop()
            self.ns.stop()
        finally:
            self.changes.release()


class UserRig(Rig):
    """A test's world as the desktop user: its home, its keyring, the cloud, and every
    command run as the user in the namespace where smarthomefs is installed."""

    def __init__(self, tmp: Path, system: UserSystem, cloud):
        self.system = system
        self.user = system.user
        system.reset()
        (tmp / "root").mkdir(parents=True)
        Rig.__init__(self, tmp / "root", system.keyring, cloud)
        self.home = self.user.home
        self.env = dict(self.keyring.env, HOME=str(self.home))
        self.prefix = [*system.ns.enter, *self.user.prefix]
        self.cafile = self.home / ".cloud-ca.pem"  # the user's copy: the CA is root's
        self.user.write(self.cafile, Path(cloud.cafile).read_bytes())
        # The user's environment is a desktop's, not the run's: the run's sanitizer
        # options are added, with the reports written to files (a daemon's stderr is
        # /dev/null) in a directory of this test's, made by root in the user's runtime
        # directory (the test's tmp is root's alone) and then given to the user.
        self.reports = Path(tempfile.mkdtemp(prefix="sanitizer-", dir=self.user.runtime))
        os.chown(self.reports, self.user.uid, self.user.gid)
        self.env.update(sanitizer_env(self.reports / "report"))

    def options(self, provider="tado", extra=()):
        return [opt.replace(f"cafile={self.cloud.cafile}", f"cafile={self.cafile}")
                for opt in Rig.options(self, provider, extra)]

    def write_config(self, account="tado", extra=()):
        """~/.config/smarthomefs/config pointing @account at the emulated cloud, so that
        the README's commands run as written."""
        return self.write_accounts_config([account], {account: extra})

    def write_accounts_config(self, accounts, extra=None):
        path = self.home / ".config/smarthomefs/config"
        self.user.write(path, self.config_text(accounts, extra))
        return path

    def sh(self, script, check=True, timeout=120, env=None, input=None):
        """Runs @script with sh -e as the user, in its home; -> CompletedProcess (text)."""
        r = subprocess.run([*self.prefix, "sh", "-ec", f"cd; {script}"], env=env or self.env,
                           capture_output=True, text=True, timeout=timeout, input=input)
        self.outputs += [r.stdout, r.stderr]
        if check and r.returncode != 0:
            raise AssertionError(f"{script!r} exited {r.returncode}: {r.stderr}")
        return r

    def read(self, path):
        """The content of @path read by the user (root may not read the user's mount)."""
        return self.sh(f"cat '{path}'").stdout

    def is_mount(self, path):
        return self.system.ns.is_mount(path)

    def mkdirs(self, path):
        self.user.mkdirs(path)

    def unmount(self, path):
        """The user's fusermount3 -u; root's -uz when busy."""
        if self.sh(f"fusermount3 -u '{path}'", check=False).returncode != 0:
            self.system.ns.run("fusermount3", "-uz", str(path))

    def mount(self, account="tado", provider=None, extra=(), name="home-data", wrapper=()):
        """Mounts with `smarthomefs mount -f` in the foreground, the options from the
        config file (written here) and -o @extra."""
        assert not wrapper, "no wrapper for the user's mounts"
        self.write_config(account)
        log = self.tmp / f"mount-{len(self.mounts)}.log"
        self.logs.append(log)
        m = Mount(self, account, self.home / name, list(extra), log)
        self.mounts.append(m)
        return m

    def stop(self):
        Rig.stop(self)
        self.system.ns.unmount_all(under=self.home)

    def daemons(self):
        """The user's processes in the namespace: its mount daemons, however started."""
        return self.system.ns.daemons(self.user.uid)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def user_system(tmp_path_factory):
    """The desktop user of this run; /dev/fuse and the user restored when it ends. A
    SIGTERM becomes an interrupt, so that the finalizers still run; after a SIGKILL the
    next run restores them (MachineChanges)."""
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    system = UserSystem(tmp_path_factory.mktemp("desktop"))
    try:
        yield system
    finally:
        system.stop()
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def checked(rig):
    """@rig for one test: at its end stopped, then checked for a token in an output or
    log and for a sanitizer report; its keyring emptied whatever happened."""
    try:
        yield rig
        rig.stop()
        # Every test also proves that no token reached an output, a log or the mount.
        rig.assert_no_secret_leaked()
        rig.assert_no_sanitizer_report()
    finally:
        rig.stop()
        rig.keyring.clear()


@pytest.fixture
def user_rig(tmp_path, user_system, cloud):
    """Like `rig`, as the desktop user."""
    user_system.keyring.clear()
    with checked(UserRig(tmp_path, user_system, cloud)) as r:
        yield r
