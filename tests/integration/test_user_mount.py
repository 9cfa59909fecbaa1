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
