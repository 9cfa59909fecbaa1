"""Mounting as a desktop user does: `smarthomefs mount`, the helper
/sbin/mount.smarthomefs, and an /etc/fstab `user` line with mount/umount, with the types
smarthomefs and fuse.smarthomefs. The user is not root: /dev/fuse 0666, setuid
fusermount3 and mount(8), a keyring on the user's session bus, HOME stripped by mount(8)
and set to /root by mount.fuse3."""

import re
import subprocess

import pytest

from rig import user_rig, user_system, wait_until  # noqa: F401

HOME_ID = "1001"
VALUE = f"homes/{HOME_ID}/zones/1/values/inside_temperature"


@pytest.fixture
def desk(user_rig):
    """The user logged in to tado, the emulated cloud in its config file."""
    user_rig.login_tado()
    user_rig.write_config()
    user_rig.user.mkdirs(user_rig.home / "home-data")
    return user_rig


def findmnt(desk, path):
    """(source, fstype, options) of the mount at @path, as the user sees it."""
    r = desk.sh(f"findmnt -n -o SOURCE,FSTYPE,OPTIONS {path}", check=False)
    return tuple(r.stdout.split()) if r.returncode == 0 else None


def daemon_gone(desk):
    return not desk.system.ns.daemons(desk.user.uid)


def zone_state_gets(desk):
    stats = desk.cloud.control.stats()["requests"]
    return sum(n for k, n in stats.items() if k.startswith("GET ") and "zoneStates" in k)


def test_smarthomefs_mount_as_the_user_mounts_reads_and_unmounts(desk):
    r = desk.sh("smarthomefs mount tado ~/home-data")
    assert r.stderr == ""
    source, fstype, options = findmnt(desk, desk.home / "home-data")
    assert (source, fstype) == ("tado", "fuse.smarthomefs")
    assert f"user_id={desk.user.uid}" in options
    assert re.fullmatch(r"-?\d+(\.\d+)?\n", desk.sh(f"cat ~/home-data/{VALUE}").stdout)
    status = desk.sh("smarthomefs status").stdout
    assert f"mounted at:    {desk.home}/home-data" in status
    desk.sh("fusermount3 -u ~/home-data")
    assert findmnt(desk, desk.home / "home-data") is None
    wait_until(lambda: daemon_gone(desk), 15, "the daemon to exit")
    assert (desk.home / ".cache/smarthomefs/tado").is_dir()


def test_mount_helper_is_not_on_a_users_path_but_runs_by_its_path(desk):
    assert desk.sh("command -v mount.smarthomefs", check=False).returncode != 0
    desk.sh("/sbin/mount.smarthomefs tado ~/home-data")
    assert findmnt(desk, desk.home / "home-data")[:2] == ("tado", "fuse.smarthomefs")
    assert re.fullmatch(r"-?\d+(\.\d+)?\n", desk.sh(f"cat ~/home-data/{VALUE}").stdout)
    desk.sh("fusermount3 -u ~/home-data")
    wait_until(lambda: daemon_gone(desk), 15, "the daemon to exit")


def mounts_at(desk, path):
    """How many mounts are stacked on @path, from the user's mount table."""
    table = desk.sh("cat /proc/self/mountinfo").stdout
    return sum(1 for line in table.splitlines() if line.split()[4] == str(path))


def test_a_second_mount_on_a_mounted_point_says_already_mounted_and_stacks_nothing(desk):
    desk.sh("smarthomefs mount tado ~/home-data")
    r = desk.sh("smarthomefs mount tado ~/home-data", check=False)
    assert r.returncode == 1
    assert f"{desk.home}/home-data is already mounted (fuse.smarthomefs tado)" in r.stderr
    assert "Permission denied" not in r.stderr and "empty directory" not in r.stderr
    assert mounts_at(desk, desk.home / "home-data") == 1
    r = desk.sh("/sbin/mount.smarthomefs tado ~/home-data", check=False)
    assert r.returncode == 1 and "already mounted" in r.stderr
    assert mounts_at(desk, desk.home / "home-data") == 1


def test_allow_other_refused_says_what_fuse_conf_needs_and_nothing_else(desk, tmp_path):
    """Debian's /etc/fuse.conf as shipped: user_allow_other commented out."""
    conf = tmp_path / "fuse.conf"
    conf.write_text("# mount_max = 1000\n#user_allow_other\n")
    ns = desk.system.ns
    assert ns.run("mount", "--bind", str(conf), "/etc/fuse.conf").returncode == 0
    try:
        r = desk.sh("smarthomefs mount tado ~/home-data -o allow_other", check=False)
    finally:
        ns.run("umount", "/etc/fuse.conf")
    assert r.returncode == 1
    assert "user_allow_other" in r.stderr and "/etc/fuse.conf" in r.stderr
    assert "directory you may" not in r.stderr
    assert mounts_at(desk, desk.home / "home-data") == 0


def test_the_account_is_checked_before_the_directory(desk):
    r = desk.sh("smarthomefs mount tado:nobody ~/no-such-dir", check=False)
    assert r.returncode == 1
    assert "tado:nobody" in r.stderr and "smarthomefs login" in r.stderr, r.stderr
    assert "no-such-dir" not in r.stderr


def test_a_misspelled_account_names_the_accounts_logged_in(desk):
    r = desk.sh("smarthomefs mount tado:holday ~/home-data", check=False)
    assert r.returncode == 1
    assert "No login for tado:holday is stored" in r.stderr and "Logged in: tado." in r.stderr
    assert mounts_at(desk, desk.home / "home-data") == 0
    for cmd in ("status", "logout"):
        r = desk.sh(f"smarthomefs {cmd} tado:holday", check=False)
        assert r.returncode == 1
        assert "no login is stored for 'tado:holday' in the keyring (logged in: tado)" \
            in r.stderr, r.stderr


def test_a_missing_mount_point_says_how_to_make_it(desk):
    r = desk.sh("smarthomefs mount tado ~/no-such-dir", check=False)
    assert r.returncode == 1
    assert f"cannot mount on {desk.home}/no-such-dir: no such directory; make it first: " \
        f"mkdir -p {desk.home}/no-such-dir" in r.stderr, r.stderr
    assert mounts_at(desk, desk.home / "no-such-dir") == 0
    desk.sh("touch ~/a-file")
    r = desk.sh("smarthomefs mount tado ~/a-file", check=False)
    assert r.returncode == 1
    assert f"cannot mount on {desk.home}/a-file: not a directory" in r.stderr, r.stderr
    assert mounts_at(desk, desk.home / "a-file") == 0


def test_a_failed_mount_of_an_account_not_logged_in_leaves_no_cache_directory(desk):
    assert not (desk.home / ".cache").exists()
    r = desk.sh("smarthomefs mount tado:nobody ~/home-data", check=False)
    assert r.returncode == 1 and "smarthomefs login" in r.stderr
    assert not (desk.home / ".cache").exists()
    r = desk.sh("smarthomefs mount tado:nobody ~/home-data -f", check=False)
    assert r.returncode == 1
    assert not (desk.home / ".cache").exists()


def test_a_cache_that_cannot_be_used_is_said_and_the_mount_still_works(desk):
    """/var/cache is root's: the disk copy cannot be kept, and the user is told so."""
    desk.write_config(extra=["cache_dir=/var/cache/smarthomefs-of-a-user"])
    r = desk.sh("smarthomefs mount tado ~/home-data")
    assert "no disk cache: cannot use /var/cache/smarthomefs-of-a-user (Permission denied)" \
        in r.stderr
    assert re.fullmatch(r"-?\d+(\.\d+)?\n", desk.sh(f"cat ~/home-data/{VALUE}").stdout)
