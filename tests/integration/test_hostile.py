"""Hostile input and hard faults (issue 7): whatever the emulated cloud sends (errors,
broken, huge or nested bodies, hostile ids, a stalled body, the wrong certificate), a read
gives the errno of design.md's table or the stale copy, the daemon logs a line, memory
stays bounded and the mount stays alive. And nobody else gets at the account: no token or
secret in argv, environments, logs, the cache or the mount; private directories and
files; the mount closed to other users; valgrind finds no error and no leak."""

import errno
import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from rig import BIN, ROOT, wait_until, read, read_error

HOME = "1001"
TIMEOUT = 2  # the mount's `timeout` in these tests (seconds)
SLACK = 1.5  # what a FUSE round trip may add
MIB = 1 << 20

# What a read of a resource the cache never had gives, kind by kind (design.md).
UNCACHED_ERRNO = {
    "500": {errno.EIO}, "502": {errno.EIO}, "503": {errno.EIO},
    "429": {errno.EAGAIN},
    "drop": {errno.EIO}, "malformed": {errno.EIO}, "truncated": {errno.EIO},
    "empty": {errno.EIO}, "huge": {errno.EIO}, "nested": {errno.EIO},
    "stall": {errno.ETIMEDOUT, errno.EIO},
}


def try_read(path):
    """The bytes of @path, or None when the read fails."""
    try:
        return read(path)
    except OSError:
        return None


def proc_status(pid):
    """/proc/PID/status as a dict of its fields (values as text)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def kib(field):
    return int(field.split()[0])


def log_text(rig):
    return rig.logs[-1].read_text(errors="replace")


@pytest.mark.parametrize("kind", sorted(UNCACHED_ERRNO))
def test_cloud_fault_gives_the_documented_errno_a_log_line_and_a_live_mount(rig, kind):
    rig.login_tado()
    m = rig.mount(extra=[f"timeout={TIMEOUT}", "ttl=0"])
    home = read(m / f"homes/{HOME}/home.json")
    rss_before = kib(proc_status(m.proc.pid)["VmRSS"])
    log_before = len(log_text(rig))
    rig.cloud.control.fail(kind, count=-1, path="/api/v2/homes/")

    code, took = read_error(m / f"homes/{HOME}/weather.json")
    assert code in UNCACHED_ERRNO[kind], os.strerror(code)
    # Within `timeout` whatever the kind (retries included): the 100 MiB body too.
    assert took < TIMEOUT + SLACK
    # What the cache had is served stale rather than an error (429 too).
    assert read(m / f"homes/{HOME}/home.json") == home
    new_log = log_text(rig)[log_before:]
    assert f"/homes/{HOME}/weather" in new_log, new_log

    # A body cap, not a 100 MiB buffer: the daemon's peak memory stays far below it.
    peak = kib(proc_status(m.proc.pid)["VmHWM"])
    assert peak - rss_before < 40 * 1024, f"peak RSS grew by {peak - rss_before} KiB"

    rig.cloud.control.clear_faults()
    assert m.proc.poll() is None and m.path.is_mount()
    assert json.loads(read(m / ".smarthomefs/status.json"))["account"] == "tado"
    if kind != "429":  # a 429 rightly blocks calls until the budget refills
        weather = rig.cloud.control.data()["tado"]["homes"][HOME]["weather"]
        # A failure is remembered for a moment (so a dead cloud costs one timeout).
        got = wait_until(lambda: try_read(m / f"homes/{HOME}/weather.json"), 10,
                         "a read to work again once the cloud is healthy")
        assert json.loads(got) == weather


def test_a_100_mib_body_is_refused_without_reading_it(rig):
    rig.login_tado()
    m = rig.mount(extra=["timeout=30"])
    os.listdir(m / "homes")
    rig.cloud.control.fail("huge", count=-1, path="/weather")
    code, took = read_error(m / f"homes/{HOME}/weather.json")
    assert code == errno.EIO
    # The body announces its size: refused at once, not after 30 s of streaming.
    assert took < 10
    assert kib(proc_status(m.proc.pid)["VmHWM"]) < 100 * 1024


def hostile_names_ok(names):
    for n in names:
        assert n not in (".", "..", "") and "/" not in n and "\0" not in n
        assert "\n" not in n and len(n.encode("utf-8", "surrogateescape")) <= 255
        assert "\u202e" not in n and "\u0085" not in n  # reorders or breaks the line
    assert len(set(names)) == len(names)


def walk_all(root):
    """Every path below @root, read or listed; never a path outside it."""
    seen = []
    real_root = os.path.realpath(root)
    for dirpath, dirnames, filenames in os.walk(root):
        hostile_names_ok(dirnames + filenames)
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            assert os.path.realpath(p).startswith(real_root + os.sep)
            seen.append(p)
        for name in filenames:
            try:
                read(os.path.join(dirpath, name))
            except OSError as e:  # a file whose resource is not there: never a crash
                assert e.errno in (errno.ENOENT, errno.EIO), e
    return seen


def test_hostile_ids_become_escaped_unique_names_inside_the_tree(rig):
    rig.login_tado()
    m = rig.mount(extra=[f"timeout={TIMEOUT}"])
    rig.cloud.control.fail("badids", count=-1, path="/api/v2/")
    homes = os.listdir(m / "homes")
    hostile_names_ok(homes)
    # Each id of the body shows up once, escaped: '..', '.', 'a/b' and the rest. An empty
    # id names no API resource, so the provider leaves it out.
    for expected in ("%2E%2E", "%2E", "a%2Fb", "dup", "-rf", "1001", "new%0Aline",
                     "evil%E2%80%AEtxt.exe", "line%C2%85next"):
        assert expected in homes, homes
    assert "" not in homes and "%" not in homes
    assert any(n.startswith("xxxx") and "%~" in n for n in homes), homes
    # Bytes that are not UTF-8 read as Latin-1; an id with a NUL ends at the NUL.
    assert "bad\xff\xfe\xc3(utf8" in homes, homes
    assert "nul" in homes, homes
    paths = walk_all(m.path / "homes" / "a%2Fb")
    paths += walk_all(m.path / "homes" / "%2E%2E")
    assert any(p.endswith("zones") for p in paths)
    # Zones with hostile ids (duplicate keys in zoneStates too) under a real home.
    zones = os.listdir(m / f"homes/{HOME}/zones")
    hostile_names_ok(zones)
    assert "%2E%2E" in zones and "a%2Fb" in zones
    walk_all(m.path / "homes" / HOME)
    assert m.proc.poll() is None
    # Nothing outside the mount was created or touched by those names.
    assert not (m.path.parent / "b").exists()

    assert json.loads(read(m / ".smarthomefs/status.json"))["account"] == "tado"


def test_wrong_server_certificate_fails_the_read_and_the_log_names_the_certificate(rig):
    rig.login_tado()
    # The same emulated cloud, but the mount trusts another CA: verification must fail.
    wrong_ca = Path(rig.cloud.certdir) / "wrong-ca.pem"
    assert wrong_ca.exists()
    log = rig.tmp / "wrong-ca.log"
    m_path = rig.tmp / "wrong-ca-mnt"
    opts = [o for o in rig.options() if not o.startswith("cafile=")]
    opts += [f"cafile={wrong_ca}", f"timeout={TIMEOUT}"]
    from rig import Mount

    rig.logs.append(log)
    m = Mount(rig, "tado", m_path, opts, log)
    rig.mounts.append(m)
    code, _ = read_error(m / "homes")  # listing homes needs /me
    assert code == errno.EIO
    lines = [l for l in log.read_text(errors="replace").splitlines() if "TLS" in l]
    assert any(re.search(r"certificate", l, re.I) for l in lines), lines
    assert m.proc.poll() is None


# ---------------------------------------------------------------- secrets

def secrets_of(rig):
    found = set(rig.secrets_seen())
    found.add("smarthomefs-test-secret")  # the emulator's Tibber client secret
    return found


def assert_clean(rig, blob, where):
    for s in secrets_of(rig):
        assert s.encode() not in blob, f"a token or secret appeared in {where}"


def test_no_token_in_argv_environment_cache_files_or_the_mount(rig):
    rig.login_tado()
    m = rig.mount(extra=["ttl=0"])
    for dirpath, dirnames, filenames in os.walk(m.path):
        for name in filenames:
            assert_clean(rig, read(os.path.join(dirpath, name)), name)
    pid = m.proc.pid
    assert_clean(rig, Path(f"/proc/{pid}/cmdline").read_bytes(), "the daemon's argv")
    assert_clean(rig, Path(f"/proc/{pid}/environ").read_bytes(), "the daemon's environment")
    # The daemon spawns nobody who could inherit a token.
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert children == []
    cache = rig.home / ".cache" / "smarthomefs"
    files = [p for p in cache.rglob("*") if p.is_file()]
    assert files, "the disk cache should hold copies"
    for p in files:
        assert_clean(rig, p.read_bytes(), f"cache file {p.name}")


def test_login_cli_has_no_token_in_argv_or_environment_while_it_waits(rig):
    rig.cloud.control.config(auto_approve=False, device_interval=0)
    cmd = [str(BIN), "login", "tado", "-o", ",".join(rig.options())]
    proc = subprocess.Popen(cmd, env=rig.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_until(lambda: rig.cloud.control.pending(), 20, "a pending device code")
        assert_clean(rig, Path(f"/proc/{proc.pid}/cmdline").read_bytes(), "the CLI's argv")
        rig.cloud.control.approve()
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    rig.outputs += [out, err]
    assert proc.returncode == 0, err


def test_cache_and_state_directories_are_private(rig):
    rig.login_tado(extra=["token_store=file"])
    m = rig.mount(extra=["token_store=file"])
    read(m / f"homes/{HOME}/home.json")
    state = rig.home / ".local" / "state" / "smarthomefs"
    cache = rig.home / ".cache" / "smarthomefs"
    checked = 0
    for top in (state, cache):
        assert top.is_dir(), top
        for p in [top, *top.rglob("*")]:
            mode = stat.S_IMODE(p.lstat().st_mode)
            if p.is_dir():
                assert mode == 0o700, f"{p} is {oct(mode)}"
            elif p.is_file():
                assert mode == 0o600, f"{p} is {oct(mode)}"
                checked += 1
    assert checked >= 2  # the token file and a cached body at least
    token_files = [p for p in state.rglob("*") if p.is_file() and "lock" not in p.name]
    assert token_files
    m.stop()
    rig.mounts.remove(m)


def test_the_daemon_cannot_dump_core(rig):
    rig.login_tado()
    m = rig.mount()
    # The daemon reads its own PR_GET_DUMPABLE when it renders status.json: the flag is in
    # force in the very process that holds the tokens (after the fork, before the keyring).
    st = json.loads(read(m / ".smarthomefs/status.json"))
    assert st.get("dumpable") is False, st


def test_another_user_cannot_read_the_mount(rig):
    rig.login_tado()
    m = rig.mount()
    read(m / f"homes/{HOME}/home.json")
    other = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    r = subprocess.run(other + ["ls", str(m.path)], capture_output=True, text=True)
    assert r.returncode != 0 and "Permission denied" in r.stderr, r
    r = subprocess.run(other + ["cat", str(m / f"homes/{HOME}/home.json")],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "Permission denied" in r.stderr, r
    # The owner still reads.
    assert read(m / f"homes/{HOME}/home.json")


def test_cafile_adds_trust_and_a_plain_http_api_is_refused(rig):
    rig.login_tado()
    bad = rig.run("status", options=["api_url=http://127.0.0.1:1/api/v2"], check=False)
    assert bad.returncode != 0 and "https://" in bad.stderr
    # Without cafile, the emulator's private CA is not trusted: the system store stays
    # in charge, so a read fails; with it, the read works.
    opts = [o for o in rig.options() if not o.startswith("cafile=")] + [f"timeout={TIMEOUT}"]
    from rig import Mount

    log = rig.tmp / "no-cafile.log"
    rig.logs.append(log)
    m = Mount(rig, "tado", rig.tmp / "no-cafile", opts, log)
    rig.mounts.append(m)
    code, _ = read_error(m / "homes")
    assert code == errno.EIO
    assert "certificate" in log.read_text(errors="replace").split("mounted", 1)[1]
    good = rig.mount()
    assert os.listdir(good / "homes")


# ---------------------------------------------------------------- valgrind

def sanitized(binary):
    code = Path(binary).read_bytes()
    return b"__asan_init" in code or b"__tsan_init" in code


@pytest.mark.skipif(not shutil.which("valgrind"), reason="valgrind not installed")
def test_a_mount_walk_unmount_cycle_under_valgrind_has_no_error_and_no_leak(rig):
    if sanitized(BIN):
        pytest.skip("valgrind cannot run a sanitizer build; the plain build runs this test")
    rig.login_tado()
    vlog = rig.tmp / "valgrind.log"
    supp = ROOT / "tests" / "integration" / "valgrind.supp"
    m = rig.mount(wrapper=["valgrind", "--tool=memcheck", "--leak-check=full",
                           "--show-leak-kinds=definite", "--errors-for-leak-kinds=definite",
                           "--error-exitcode=99", f"--suppressions={supp}",
                           f"--log-file={vlog}"])
    seen = 0
    for dirpath, dirnames, filenames in os.walk(m.path):
        for name in filenames:
            read(os.path.join(dirpath, name))
            seen += 1
    assert seen > 10
    code = m.stop(timeout=120)
    text = vlog.read_text(errors="replace")
    assert "ERROR SUMMARY: 0 errors" in text, text[-4000:]
    assert "definitely lost" not in text or "definitely lost: 0 bytes" in text, text[-4000:]
    assert code == 0, text[-4000:]


# ---------------------------------------------------------------- local trust (issue 17)

NOBODY = 65534  # another local user


def mount_refused(rig, extra=(), env=None):
    """`smarthomefs mount tado` that must refuse to start; -> its stderr. A mount that
    starts anyway is unmounted before the test fails."""
    mnt = rig.tmp / "refused-mnt"
    mnt.mkdir(exist_ok=True)
    r = rig.run("mount", "tado", str(mnt), options=list(extra), env=env, check=False)
    if r.returncode == 0:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
    assert r.returncode == 1, f"the mount started: {r.stderr}"
    assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    return r.stderr


def planted_dir(path, mode=0o777):
    """A directory another user made, as they would in a place all may write."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, NOBODY, NOBODY)
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize("runtime_mode", [0o777, 0o1777])
def test_a_runtime_directory_others_control_is_refused_before_they_can_stop_refreshes(
        rig, runtime_mode):
    rig.login_tado()
    # XDG_RUNTIME_DIR that all may write (or a sticky /tmp-like one); another user made
    # smarthomefs/ in it, and holds the lock of the account.
    runtime = rig.tmp / "shared-runtime"
    runtime.mkdir()
    os.chmod(runtime, runtime_mode)
    ours = planted_dir(runtime / "smarthomefs")
    lock = ours / "tado.lock"
    fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o666)
    os.fchown(fd, NOBODY, NOBODY)
    import fcntl
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        env = {**rig.env, "XDG_RUNTIME_DIR": str(runtime)}
        err = mount_refused(rig, env=env)
        named = str(runtime) if runtime_mode == 0o777 else str(ours)
        assert named in err and ("another user" in err or "written by" in err), err
    finally:
        os.close(fd)


def test_a_cache_directory_another_user_made_is_refused_and_its_copy_never_served(rig):
    rig.login_tado()
    cache = planted_dir(rig.tmp / "planted-cache", 0o755)
    (cache / "forged").write_text("{}")
    err = mount_refused(rig, [f"cache_dir={cache}"])
    assert str(cache) in err and "another user" in err, err
    # A cache directory of ours that others may write is refused as well.
    os.chown(cache, 0, 0)
    os.chmod(cache, 0o777)
    err = mount_refused(rig, [f"cache_dir={cache}"])
    assert str(cache) in err and "written by other users" in err, err


def test_a_planted_token_file_is_never_sent(rig):
    rig.login_tado(extra=["token_store=file"])
    token = rig.home / ".local/state/smarthomefs/tokens/tado.json"
    assert token.is_file()
    # Another user's file in its place (the directory was theirs a moment ago).
    os.chown(token, NOBODY, NOBODY)
    rig.cloud.control.reset_stats()
    err = mount_refused(rig, ["token_store=file"])
    assert str(token) in err and "another user" in err, err
    # A link to a file elsewhere, which the user cannot vouch for.
    elsewhere = rig.tmp / "elsewhere.json"
    os.chown(token, 0, 0)
    token.rename(elsewhere)
    token.symlink_to(elsewhere)
    err = mount_refused(rig, ["token_store=file"])
    assert str(token) in err and "link" in err, err
    # Nothing went to the cloud with what the file held.
    assert not rig.cloud.control.stats()["requests"]


def test_cafile_must_be_a_regular_file_nobody_else_can_change(rig):
    rig.login_tado()
    opts = [o for o in rig.options() if not o.startswith("cafile=")]
    mnt = rig.tmp / "refused-mnt"
    for cafile, says in (("/dev/zero", "not a regular file"),
                         (str(rig.tmp / "their-ca.pem"), "another user")):
        if cafile != "/dev/zero":
            shutil.copy(rig.cloud.cafile, cafile)
            os.chown(cafile, NOBODY, NOBODY)
        cmd = [str(BIN), "mount", "tado", str(mnt), "-o", ",".join(opts + [f"cafile={cafile}"])]
        mnt.mkdir(exist_ok=True)
        r = subprocess.run(cmd, env=rig.env, capture_output=True, text=True, timeout=60)
        rig.outputs += [r.stdout, r.stderr]
        if r.returncode == 0:
            subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        assert r.returncode == 1 and cafile in r.stderr and says in r.stderr, r.stderr


# ---------------------------------------------------------------- the login (issue 17)

import http.server  # noqa: E402
import ssl  # noqa: E402
import threading  # noqa: E402
import urllib.error  # noqa: E402
import urllib.parse  # noqa: E402
import urllib.request  # noqa: E402

from rig import TIBBER_CLIENT_ID, TIBBER_CLIENT_SECRET, TibberLogin, follow_redirect, stored_tokens  # noqa: E402

# What a terminal takes as a command: ESC (CSI, OSC 8 links, titles), BEL, CR, C1 CSI.
TERMINAL_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f\u0080-\u009f\u202a-\u202e]")


class HostileLoginServer:
    """An HTTPS login server of the test's own (the emulator's certificate), whose answers
    the test writes: answers[path] -> (status, JSON object) or a function of the form
    received. Every form it receives is kept in .forms."""

    def __init__(self, cloud):
        self.answers = {}
        self.forms = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(n).decode()))
                server.forms.append((self.path, form))
                answer = server.answers.get(self.path, (404, {"error": "not_found"}))
                status, body = answer(form) if callable(answer) else answer
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(cloud.certdir, "server.pem"),
                            os.path.join(cloud.certdir, "server.key"))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hostile(rig):
    s = HostileLoginServer(rig.cloud)
    yield s
    s.stop()


def run_login(rig, args, auth_url, input=""):
    cmd = [str(BIN), "login", *args, "-o", f"auth_url={auth_url},cafile={rig.cloud.cafile}"]
    r = subprocess.run(cmd, env=rig.env, input=input, capture_output=True, text=True,
                       timeout=60)
    rig.outputs += [r.stdout, r.stderr]
    return r


def test_device_login_prints_no_secret_and_nothing_that_drives_the_terminal(rig, hostile):
    device_code = "DEVICE-CODE-never-shown-0123456789"
    hostile.answers["/oauth2/device_authorize"] = (200, {
        "device_code": device_code,
        "user_code": "\x1b[2J\x1b]0;owned\x07AB\rCD\u009b31m\u202eEF",
        "verification_uri_complete":
            "https://login.example/\x1b]8;;https://evil.example/\x1b\\device\x1b]8;;\x1b\\",
        "interval": 0, "expires_in": 30})
    # The token endpoint echoes what it was sent as its error: first the device code,
    # then a log line of its own making.
    echoes = iter([(400, {"error": device_code}),
                   (400, {"error": "slow_down\n\x1b[31mERROR forged line"})])
    hostile.answers["/oauth2/token"] = lambda form: next(echoes)
    r = run_login(rig, ["tado"], hostile.url)
    assert r.returncode == 1
    assert device_code in [f.get("device_code") for _, f in hostile.forms]
    for text in (r.stdout, r.stderr):
        assert device_code not in text
        assert not TERMINAL_CONTROLS.search(text), repr(text)
    # Written out where they were, visibly, and the code still readable.
    assert "AB\\x0dCD" in r.stdout and "\\x1b]8;;https://evil.example/" in r.stdout
    assert "[redacted]" in r.stderr


@pytest.mark.parametrize("echoed", ["client_secret", "code", "code_verifier"])
def test_pkce_login_never_shows_a_secret_a_token_endpoint_echoes(rig, hostile, echoed):
    secret = "client-secret-of-the-user-42"
    hostile.answers["/connect/token"] = lambda form: (400, {"error": form[echoed]})
    cmd = [str(BIN), "login", "tibber", "--client-id", TIBBER_CLIENT_ID, "--no-browser",
           "-o", f"auth_url={hostile.url},cafile={rig.cloud.cafile}"]
    proc = subprocess.Popen(cmd, env=rig.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdin.write(secret + "\n")
    proc.stdin.close()
    proc.stdout.readline()  # "Open this link in a browser to log in:"
    url = proc.stdout.readline().strip()
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    code = "authorization-code-of-the-user-77"
    status, page = follow_redirect(
        f"{q['redirect_uri']}?{urllib.parse.urlencode({'code': code, 'state': q['state']})}")
    proc.wait(30)
    out, err = proc.stdout.read(), proc.stderr.read()
    rig.outputs += [out, err]
    assert proc.returncode == 1 and status == 403
    form = hostile.forms[-1][1]
    assert form[echoed] and form["client_secret"] == secret and form["code"] == code
    for text in (out, err, page):
        for s in (secret, code, form["code_verifier"]):
            assert s not in text and urllib.parse.quote(s) not in text, text
    assert "[redacted]" in err and "[redacted]" in page


def other_user(cmd_python, *args):
    """Runs python code as another local user; -> the Popen (stdin, stdout piped)."""
    def drop():
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    return subprocess.Popen(["/usr/bin/python3", "-c", cmd_python, *args], preexec_fn=drop,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


# As another user: holds 12 idle connections to the listener, then delivers the login's
# own answer (the worst case: they saw it), prints the status line it got, and keeps the
# connections until stdin closes.
HOLD_AND_DELIVER = r"""
import socket, sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
held = [socket.create_connection((u.hostname, u.port)) for _ in range(12)]
s = socket.create_connection((u.hostname, u.port))
s.sendall(f"GET {u.path}?{u.query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
try:
    line = s.makefile("rb").readline().decode().strip()
except OSError as e:
    line = f"error {e}"
print(line or "closed", flush=True)
sys.stdin.read()
"""


def test_another_user_can_neither_deliver_a_code_nor_hold_the_listener(rig):
    login = rig.start_login_tibber()
    location = rig.cloud.control.tibber_consent(login.url, "allow")
    attacker = other_user(HOLD_AND_DELIVER, location)
    try:
        said = attacker.stdout.readline().strip()
        assert " 200 " not in said and ("403" in said or said == "closed"), said
        assert rig.cloud.control.stats()["token_requests"].get("authorization_code", 0) == 0
        assert login.proc.poll() is None
        # With their connections still open, the user's own browser gets through.
        status, page = follow_redirect(location)
        code, out, err = login.finish()
        assert status == 200 and code == 0, err
    finally:
        attacker.stdin.close()
        attacker.wait(10)


def test_xdg_open_is_given_no_state_or_challenge(rig, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    seen = tmp_path / "xdg-open-argv"
    (bindir / "xdg-open").write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {seen}\n")
    (bindir / "xdg-open").chmod(0o755)
    env = dict(rig.env)
    rig.env.update(PATH=f"{bindir}:{env.get('PATH', '/usr/bin:/bin')}", DISPLAY=":99")
    try:
        login = TibberLogin(rig, ["--client-id", TIBBER_CLIENT_ID], TIBBER_CLIENT_SECRET)
    finally:
        rig.env = env
    opened = wait_until(lambda: seen.exists() and seen.read_text().strip(), 20,
                        "xdg-open to be run")
    q = login.query()
    assert q["state"] not in opened and q["code_challenge"] not in opened, opened
    assert opened.startswith("http://127.0.0.1:")
    # What it was given sends the user's browser on to the authorize link.
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None
    try:
        urllib.request.build_opener(NoRedirect).open(opened, timeout=10)
        raise AssertionError("no redirect")
    except urllib.error.HTTPError as e:
        assert e.code == 303 and e.headers["Location"] == login.url
    status, _ = follow_redirect(rig.cloud.control.tibber_consent(login.url, "allow"))
    code, out, err = login.finish()
    assert status == 200 and code == 0, err
    assert stored_tokens(rig, "tibber")["refresh_token"]
