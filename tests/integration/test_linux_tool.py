"""smarthomefs as a Linux tool: what `meson install` lays out, the man pages, the systemd
user unit, mount(8) with an fstab line and with the fuse.smarthomefs type, the debug log,
errors in the config file and options, status, and --help/--version on every command.

mount(8) runs helpers from /sbin only. So that the machine's own /usr is never touched,
the tests of mount(8) run in a private mount namespace in which /usr/bin/smarthomefs and
/usr/sbin/mount.smarthomefs are laid over /usr (an overlay) as `meson install` lays
them out, as links to the program under test (rig.link_tree): inside it the machine looks
as if it had been installed, outside nothing changed. So the daemons mount(8) starts are
a sanitized pass's build too, whose reports the rig checks; what `meson install` itself
lays out is tested from a plain build of the tree (`installed`)."""

import contextlib
import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from rig import BIN, ROOT, wait_until
from rig import SystemNamespace, link_tree

HOME = "1001"
PREFIX = "usr"


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 300),
                          **kw)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`meson install --destdir` of a build configured with --prefix=/usr; the destdir."""
    tmp = tmp_path_factory.mktemp("install")
    build, dest = tmp / "build", tmp / "dest"
    r = run(["meson", "setup", str(build), "--prefix=/usr", "-Dman=enabled"], cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    r = run(["meson", "install", "-C", str(build), "--destdir", str(dest)])
    assert r.returncode == 0, r.stdout + r.stderr
    return dest


@pytest.fixture
def system(tmp_path):
    ns = SystemNamespace(link_tree(tmp_path / "installed"))
    try:
        yield ns
    finally:
        ns.stop()


def unmount_if_mounted(path):
    if Path(path).is_mount():
        if run(["fusermount3", "-u", str(path)]).returncode != 0:
            run(["fusermount3", "-uz", str(path)])


# --- install -------------------------------------------------------------------------


def test_meson_install_lays_out_binary_mount_helper_man_pages_unit_and_completion(installed):
    usr = installed / PREFIX
    assert os.access(usr / "bin/smarthomefs", os.X_OK)
    helper = usr / "sbin/mount.smarthomefs"
    assert helper.is_symlink() and os.readlink(helper) == "/usr/bin/smarthomefs"
    assert (usr / "share/man/man1/smarthomefs.1").read_text().startswith(".\\\" Generated")
    assert (usr / "share/man/man8/mount.smarthomefs.8").is_file()
    unit = (usr / "lib/systemd/user/smarthomefs@.service").read_text()
    assert "ExecStart=/usr/bin/smarthomefs mount %i %h/home-data/%i --foreground" in unit
    unit = (usr / "lib/systemd/user/smarthomefs.service").read_text()
    assert "ExecStart=/usr/bin/smarthomefs mount %h/home-data --foreground" in unit
    completion = usr / "share/bash-completion/completions/smarthomefs"
    assert "complete -F _smarthomefs smarthomefs mount.smarthomefs" in completion.read_text()
    assert os.readlink(usr / "share/bash-completion/completions/mount.smarthomefs") == \
        "smarthomefs"


@pytest.mark.parametrize("page", ["man1/smarthomefs.1", "man8/mount.smarthomefs.8"])
def test_man_renders_the_page_without_warnings(installed, page):
    env = dict(os.environ, MANWIDTH="80", LANG="C.UTF-8")
    r = run(["man", "--warnings", "-l", str(installed / PREFIX / "share/man" / page)],
            env=env)
    assert r.returncode == 0
    assert r.stderr == ""
    assert "SYNOPSIS" in r.stdout and "EXIT STATUS" in r.stdout


def test_man_page_documents_every_option_of_the_options_table(installed):
    table = (ROOT / "src/config.c").read_text()
    keys = re.findall(r'^\s*OPT\("(\w+)"', table, re.M)
    assert "ttl" in keys and "token_store" in keys
    r = run(["man", "-l", str(installed / PREFIX / "share/man/man1/smarthomefs.1")],
            env=dict(os.environ, MANWIDTH="100"))
    text = r.stdout
    undocumented = [k for k in keys if not re.search(rf"^\s+{k}\b", text, re.M)]
    assert undocumented == []
    assert "SMARTHOMEFS_CONFIG" in text and "$XDG_CONFIG_HOME/smarthomefs/config" in text


def test_bash_completion_completes_commands_and_options(installed):
    script = installed / PREFIX / "share/bash-completion/completions/smarthomefs"
    probe = f"""
        _init_completion() {{ cur=${{COMP_WORDS[COMP_CWORD]}}; prev=${{COMP_WORDS[COMP_CWORD-1]}};
                             words=("${{COMP_WORDS[@]}}"); cword=$COMP_CWORD; }}
        source {script}
        COMP_WORDS=(smarthomefs st); COMP_CWORD=1; _smarthomefs; echo "${{COMPREPLY[@]}}"
        COMP_WORDS=(smarthomefs mount -o ttl=5,of); COMP_CWORD=3; _smarthomefs
        echo "${{COMPREPLY[@]}}"
        _filedir() {{ :; }}
        COMP_WORDS=(smarthomefs mount al); COMP_CWORD=2; _smarthomefs; echo "${{COMPREPLY[@]}}"
    """
    r = run(["bash", "-c", probe])
    assert r.stdout.splitlines() == ["status", "ttl=5,offline", "all"], r.stderr


# --- systemd -------------------------------------------------------------------------


# The unit's verification and commands, as the desktop user: test_user_systemd.py.


# --- mount(8) ------------------------------------------------------------------------


def test_fstab_line_with_type_smarthomefs_mounts_through_mount_helper(rig, system):
    rig.login_tado()
    mnt = rig.tmp / "home-data"
    mnt.mkdir()
    system.mountpoints.append(mnt)
    fstab = rig.tmp / "fstab"
    fstab.write_text(f"tado  {mnt}  smarthomefs  "
                     f"noauto,user,_netdev,ttl=120,{','.join(rig.options())}  0 0\n")

    r = system.run("mount", "-T", str(fstab), str(mnt), env=rig.env)
    rig.outputs += [r.stdout, r.stderr]
    assert r.returncode == 0, r.stderr
    r = system.run("findmnt", "-n", "-o", "SOURCE,FSTYPE,OPTIONS", str(mnt))
    source, fstype, options = r.stdout.split()
    assert (source, fstype) == ("tado", "fuse.smarthomefs")
    assert options.startswith("ro,")
    home = json.loads(system.run("cat", str(mnt / f"homes/{HOME}/home.json")).stdout)
    assert str(home["id"]) == HOME

    r = system.run("umount", str(mnt), env=rig.env)
    assert r.returncode == 0, r.stderr
    assert not system.is_mount(mnt)
    wait_until(lambda: not system.daemons(), 15, "the daemon to exit after umount")


def test_mount_helper_fails_visibly_without_a_login(rig, system):
    mnt = rig.tmp / "home-data"
    mnt.mkdir()
    system.mountpoints.append(mnt)
    r = system.run("mount", "-t", "smarthomefs", "-o", ",".join(rig.options()), "tado",
                   str(mnt), env=rig.env)
    rig.outputs += [r.stdout, r.stderr]
    assert r.returncode != 0
    assert "smarthomefs login tado" in r.stderr
    assert not system.is_mount(mnt)


SYSLOG_LISTENER = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/dev/log")
print("ready", flush=True)
with open(sys.argv[1], "ab", buffering=0) as out:
    while True:
        out.write(s.recv(65536).rstrip(b"\\n") + b"\\n")
"""


@contextlib.contextmanager
def syslog_of_a_system(rig, tmp_path):
    """A system namespace with the program installed and a syslog listener in it: ->
    (system, the file syslog writes to). The listener and the namespace end on the way
    out, whatever happened."""
    (tmp_path / "dev").mkdir()
    system = SystemNamespace(link_tree(tmp_path / "installed"), dev_upper=tmp_path / "dev")
    syslog = rig.tmp / "syslog"
    rig.logs.append(syslog)
    listener = subprocess.Popen(
        ["nsenter", "-t", str(system.holder.pid), "-m", "--", "/usr/bin/python3", "-c",
         SYSLOG_LISTENER, str(syslog)], stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout.readline() == "ready\n"
        yield system, syslog
    finally:
        system.stop()
        listener.kill()
        listener.wait()


def test_daemonized_mount_logs_to_syslog_with_request_lines_and_no_token(rig, tmp_path):
    """Without -f the daemon has no terminal: its log goes to syslog (the journal)."""
    with syslog_of_a_system(rig, tmp_path) as (system, syslog):
        rig.login_tado()
        mnt = rig.tmp / "home-data"
        mnt.mkdir()
        system.mountpoints.append(mnt)
        r = system.run("mount", "-t", "smarthomefs", "-o", ",".join(["debug", *rig.options()]),
                       "tado", str(mnt), env=rig.env)
        rig.outputs += [r.stdout, r.stderr]
        assert r.returncode == 0, r.stderr
        assert r.stderr == ""  # once mounted, nothing more on the terminal
        system.run("cat", str(mnt / f"homes/{HOME}/zones/1/state.json"))
        assert system.run("fusermount3", "-u", str(mnt)).returncode == 0
        wait_until(lambda: "unmounted" in syslog.read_text(), 15, "the unmount in syslog")
    log = syslog.read_text()
    assert re.search(rf"mount\.smarthomefs\[\d+\]: mounted tado on {re.escape(str(mnt))}", log)
    assert re.search(rf"GET /homes/{HOME}/zoneStates -> 200 in \d+\.\d+ s", log), log
    assert f"cache miss /homes/{HOME}/zoneStates" in log
    for secret in rig.secrets_seen():
        assert secret not in log


def test_a_skipped_accounts_reason_is_said_in_syslog_once_the_mount_of_all_detaches(
        rig, tmp_path):
    """The mount of all serves the accounts it can; why it skips one is said on the terminal
    as it starts, and again in syslog (the journal), where a daemon's user looks later."""
    with syslog_of_a_system(rig, tmp_path) as (system, syslog):
        rig.login_tado()
        rig.login_tado("tado:second")
        path = rig.write_accounts_config(["tado", "tado:second"], {"tado:second": ["tll=120"]})
        reason = f"cannot serve the account tado:second: {path}:"
        mnt = rig.tmp / "home-data"
        mnt.mkdir()
        system.mountpoints.append(mnt)
        r = system.run("smarthomefs", "mount", str(mnt), env=rig.env)
        rig.outputs += [r.stdout, r.stderr]
        assert r.returncode == 0, r.stderr
        assert r.stderr.count(reason) == 1, r.stderr
        assert "unknown key 'tll' in [tado:second]" in r.stderr
        wait_until(lambda: "mounted all on" in syslog.read_text(), 15, "the mount in syslog")
        assert system.run("fusermount3", "-u", str(mnt)).returncode == 0
        wait_until(lambda: "unmounted" in syslog.read_text(), 15, "the unmount in syslog")
    log = syslog.read_text()
    assert re.search(rf"smarthomefs\[\d+\]: {re.escape(reason)}"
                     r".*unknown key 'tll' in \[tado:second\]", log), log
    assert log.count(reason) == 1, log


def test_type_fuse_smarthomefs_mounts_through_mount_fuse3(rig, system):
    rig.login_tado()
    mnt = rig.tmp / "home-data"
    mnt.mkdir()
    system.mountpoints.append(mnt)

    r = system.run("mount", "-t", "fuse.smarthomefs", "-o",
                   ",".join(["_netdev", "nofail", *rig.options()]), "tado", str(mnt),
                   env=rig.env)
    rig.outputs += [r.stdout, r.stderr]
    assert r.returncode == 0, r.stderr
    r = system.run("cat", str(mnt / f"homes/{HOME}/zones/1/values/inside_temperature"))
    assert re.fullmatch(r"-?\d+(\.\d+)?\n", r.stdout)
    assert system.run("fusermount3", "-u", str(mnt)).returncode == 0
    wait_until(lambda: not system.daemons(), 15, "the daemon to exit after unmount")


def test_options_of_mount_and_systemd_are_ignored(rig):
    rig.login_tado()
    m = rig.mount(extra=["noauto", "user", "_netdev", "nofail", "x-systemd.automount",
                         "x-systemd.idle-timeout=60", "user=alice", "defaults"])
    assert (m / f"homes/{HOME}/home.json").read_bytes().startswith(b"{")


# --- logs ----------------------------------------------------------------------------


def test_debug_logs_request_lines_and_cache_lookups_and_never_a_token(rig):
    rig.login_tado()
    m = rig.mount(extra=["debug"])
    state = m / f"homes/{HOME}/zones/1/state.json"
    first = state.read_bytes()
    assert state.read_bytes() == first
    m.stop()
    log = m.log_path.read_text()

    # method, path, status, duration
    assert re.search(rf"GET /homes/{HOME}/zoneStates -> 200 in \d+\.\d+ s", log), log
    assert re.search(rf"cache miss /homes/{HOME}/zoneStates", log), log
    assert re.search(rf"cache hit /homes/{HOME}/zoneStates", log), log
    assert "Bearer" not in log and "access_token" not in log
    for secret in rig.secrets_seen():
        assert secret not in log


def test_without_debug_there_are_no_request_lines(rig):
    rig.login_tado()
    m = rig.mount()
    (m / f"homes/{HOME}/zones/1/state.json").read_bytes()
    m.stop()
    log = m.log_path.read_text()
    assert "GET /" not in log and "cache hit" not in log
    assert "mounted tado on" in log


def test_sigterm_on_a_busy_mount_leaves_it_and_exits_0(rig):
    """systemctl stop runs fusermount3 -u, which fails while a shell is in the mount, and
    then sends SIGTERM: the daemon leaves the mount and reports success, so that the unit
    is not left failed at every logout."""
    rig.login_tado()
    m = rig.mount()
    shell = subprocess.Popen(["sleep", "600"], cwd=m.path)
    try:
        busy = subprocess.run(["fusermount3", "-u", str(m.path)], capture_output=True,
                              text=True)
        assert busy.returncode != 0 and "busy" in busy.stderr, busy.stderr
        m.proc.send_signal(signal.SIGTERM)
        assert m.proc.wait(15) == 0, m.log_path.read_text()
        assert not rig.is_mount(m.path)
    finally:
        shell.kill()
        shell.wait()
    assert "stopped by Terminated" in m.log_path.read_text()


# --- config file and options ---------------------------------------------------------


def mount_expecting_failure(rig, *args, env=None):
    mnt = rig.tmp / "home-data"
    mnt.mkdir(exist_ok=True)
    try:
        return rig.run("mount", "tado", str(mnt), *args, check=False, env=env)
    finally:
        unmount_if_mounted(mnt)


def test_unknown_config_key_is_an_error_naming_file_line_and_key(rig):
    rig.login_tado()
    config = rig.home / ".config/smarthomefs/config"
    config.parent.mkdir(parents=True)
    config.write_text("[tado]\nttl = 120\n\n# a typo\ntll = 5\n")
    r = mount_expecting_failure(rig)
    assert r.returncode == 2
    assert f"{config}:5: unknown key 'tll' in [tado]" in r.stderr


def test_bad_config_value_is_an_error_naming_file_line_and_key(rig):
    rig.login_tado()
    config = rig.tmp / "elsewhere.conf"
    config.write_text("[tibber]\nttl = 1\n[tado]\ntimeout = 5\nttl = soon\n")
    env = dict(rig.env, SMARTHOMEFS_CONFIG=str(config))
    r = mount_expecting_failure(rig, env=env)
    assert r.returncode == 2
    assert f"{config}:5: key 'ttl'" in r.stderr and "whole number" in r.stderr


def test_missing_config_named_by_smarthomefs_config_is_an_error(rig):
    env = dict(rig.env, SMARTHOMEFS_CONFIG=str(rig.tmp / "nope.conf"))
    r = rig.run("status", check=False, env=env)
    assert r.returncode == 2 and "nope.conf" in r.stderr


def test_unknown_mount_option_is_an_error_naming_it(rig):
    rig.login_tado()
    r = mount_expecting_failure(rig, "-o", "ttl=5,colour=blue")
    assert r.returncode == 2
    assert "unknown option -o colour=blue" in r.stderr


# --- status --------------------------------------------------------------------------


def test_status_shows_provider_store_expiry_mount_and_calls_left(rig):
    rig.login_tado()
    m = rig.mount()
    (m / f"homes/{HOME}/zones/1/state.json").read_bytes()

    text = rig.run("status").stdout
    assert text.startswith("tado\n")
    assert re.search(r"provider:\s+tado\n", text)
    assert re.search(r"store:\s+keyring\n", text)
    assert re.search(r"token expires:\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n", text)
    assert re.search(rf"mounted at:\s+{re.escape(str(m.path))} \(API calls left: \d+\)", text)

    [acct] = json.loads(rig.run("status", "--json").stdout)
    assert acct["provider"] == "tado" and acct["store"] == "keyring"
    # The caller's other mounts of a "tado" are listed too; this one is among them.
    [mount] = [x for x in acct["mounts"] if x["mountpoint"] == str(m.path)]
    calls = sum(n for k, n in rig.cloud.control.stats()["requests"].items()
                if k.startswith("GET /api/v2/"))
    assert mount["rate_limit"]["remaining"] == 100 - calls  # the emulator's default quota


def test_status_lists_only_the_mounts_of_the_calling_user(rig, tmp_path):
    rig.login_tado()
    m = rig.mount()
    other = tmp_path / "someone-elses"
    other.mkdir()
    # Another user's mount of an account also named "tado": a FUSE mount whose options
    # say user_id=4242, made in a private mount namespace (the machine never sees it)
    # and left without a daemon (its connection ends with the fd).
    script = ("mount -i -t fuse.smarthomefs -o fd=3,rootmode=40000,user_id=4242,group_id=4242"
              f" tado '{other}' 3<>/dev/fuse\n"
              f"grep -q ' {other} fuse.smarthomefs .*user_id=4242' /proc/self/mounts\n"
              'exec "$@"')
    r = run(["unshare", "--mount", "--propagation", "private", "sh", "-ec", script, "sh",
             str(BIN), "status", "--json", "-o", ",".join(rig.options())], env=rig.env)
    rig.outputs += [r.stdout, r.stderr]

    assert r.returncode == 0, r.stderr
    [acct] = json.loads(r.stdout)
    mountpoints = [x["mountpoint"] for x in acct["mounts"]]
    assert str(m.path) in mountpoints
    assert str(other) not in mountpoints


# --- --help and --version ------------------------------------------------------------

COMMANDS = [[], ["login"], ["logout"], ["status"], ["mount"]]


@pytest.fixture
def helper(tmp_path):
    link = tmp_path / "mount.smarthomefs"
    link.symlink_to(BIN)
    return link


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: c[0] if c else "smarthomefs")
def test_help_on_every_command_prints_usage_and_exits_0(cmd):
    r = run([str(BIN), *cmd, "--help"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Usage:")
    assert "smarthomefs " + (cmd[0] if cmd else "") in r.stdout


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: c[0] if c else "smarthomefs")
def test_version_on_every_command_exits_0(cmd):
    r = run([str(BIN), *cmd, "--version"])
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"smarthomefs \d+\.\d+\.\d+\n", r.stdout)


def test_mount_helper_answers_help_and_version(helper):
    r = run([str(helper), "--help"])
    assert r.returncode == 0 and r.stdout.startswith("Usage:")
    assert "mount.smarthomefs" in r.stdout and "--sloppy" in r.stdout
    r = run([str(helper), "--version"])
    assert r.returncode == 0 and re.fullmatch(r"smarthomefs \d+\.\d+\.\d+\n", r.stdout)


def test_mount_helper_fake_mode_checks_options_without_mounting(rig, helper):
    mnt = rig.tmp / "home-data"
    mnt.mkdir()
    r = run([str(helper), "tado", str(mnt), "-sfnv", "-o", "noauto,ttl=5"], env=rig.env)
    assert r.returncode == 0, r.stderr
    assert not mnt.is_mount()
    r = run([str(helper), "tado", str(mnt), "-f", "-o", "ttl=5,colour=blue"], env=rig.env)
    assert r.returncode == 2 and "colour=blue" in r.stderr
    # A misspelled account in an fstab line is found by mount -f too, before a mount.
    r = run([str(helper), "tadoo", str(mnt), "-f"], env=rig.env)
    assert r.returncode == 2 and "unknown account 'tadoo'" in r.stderr
    r = run([str(helper), "all", str(mnt), "-f"], env=rig.env)
    assert r.returncode == 0, r.stderr
    assert not mnt.is_mount()


def test_usage_errors_exit_2(helper):
    assert run([str(BIN)]).returncode == 2
    assert run([str(BIN), "frobnicate"]).returncode == 2
    assert run([str(BIN), "status", "--no-such-flag"]).returncode == 2
    assert run([str(helper)]).returncode == 2


def test_every_option_of_the_code_is_in_the_readme_the_man_pages_and_the_completion():
    """The lists a user reads (and tab-completes) are the code's option table."""
    table = (ROOT / "src/config.c").read_text()
    names = re.findall(r'^\tOPT\("(\w+)", OPT_(\w+)', table, re.M)
    assert len(names) > 10
    readme = (ROOT / "README.md").read_text()
    readme_list = readme[readme.index("are all in `man smarthomefs`"):]
    readme_list = readme_list[:readme_list.index("\n\n")]
    man1 = (ROOT / "docs/smarthomefs.1.scd").read_text()
    man8 = (ROOT / "docs/mount.smarthomefs.8.scd").read_text()
    completion = (ROOT / "contrib/smarthomefs.bash").read_text()
    for name, kind in names:
        assert f"`{name}`" in readme_list, name
        assert re.search(rf"^\*{name}(=|\*)", man1, re.M), name
        assert f"*{name}" in man8, name
        word = name if kind == "BOOL" else f"{name}="
        assert re.search(rf"[\s\"]{word}[\s\"]", completion) or \
            f"{name}=keyring" in completion, name
