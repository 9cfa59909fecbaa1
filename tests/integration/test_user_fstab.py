"""An /etc/fstab `user` line mounted with mount/umount by the desktop user, with the
types smarthomefs and fuse.smarthomefs: mount(8) strips HOME and mount.fuse3 sets
HOME=/root, and the user's config file and disk cache must still be found."""

import json
import re

import pytest

from rig import user_rig, user_system, wait_until  # noqa: F401
from test_user_mount import VALUE, daemon_gone, desk, findmnt, zone_state_gets  # noqa: F401


@pytest.mark.parametrize("fstype", ["smarthomefs", "fuse.smarthomefs"])
def test_fstab_user_line_mounts_with_mount_and_keeps_its_disk_cache(desk, fstype):
    """The README's fstab line; `mount ~/home-data` and `umount ~/home-data` as the
    user. mount(8) strips HOME (and mount.fuse3 sets HOME=/root): the config file and
    the disk cache are still the user's, so a remount within the TTL reads the cache."""
    desk.system.set_fstab(f"tado  {desk.home}/home-data  {fstype}  "
                          "noauto,user,_netdev,ttl=120  0 0")
    r = desk.sh("mount ~/home-data", check=False)
    assert r.returncode == 0, r.stderr
    source, kind, _ = findmnt(desk, desk.home / "home-data")
    assert (source, kind) == ("tado", "fuse.smarthomefs")
    first = desk.sh(f"cat ~/home-data/{VALUE}").stdout
    assert re.fullmatch(r"-?\d+(\.\d+)?\n", first)
    desk.sh("umount ~/home-data")
    assert findmnt(desk, desk.home / "home-data") is None
    wait_until(lambda: daemon_gone(desk), 15, "the daemon to exit after umount")
    assert (desk.home / ".cache/smarthomefs/tado").is_dir()

    desk.cloud.control.reset_stats()
    desk.sh("mount ~/home-data")
    assert desk.sh(f"cat ~/home-data/{VALUE}").stdout == first
    assert zone_state_gets(desk) == 0
    desk.sh("umount ~/home-data")


def test_fstab_line_of_all_accounts_mounts_every_login_and_umounts(desk):
    """The source "all": every account logged in, in one tree at ~/home-data, mounted and
    unmounted by the user with mount(8) (whose umount checks the source it recorded)."""
    desk.cloud.control.tado_invite(1001)
    desk.cloud.control.tado_login_as("second")
    desk.login_tado("tado:second")
    desk.write_accounts_config(["tado", "tado:second"])
    desk.system.set_fstab(f"all  {desk.home}/home-data  smarthomefs  noauto,user,_netdev  0 0")
    r = desk.sh("mount ~/home-data", check=False)
    assert r.returncode == 0, r.stderr
    source, kind, _ = findmnt(desk, desk.home / "home-data")
    assert (source, kind) == ("all", "fuse.smarthomefs")
    assert desk.sh("ls ~/home-data/homes").stdout == "1001\n"
    assert re.fullmatch(r"-?\d+(\.\d+)?\n", desk.sh(f"cat ~/home-data/{VALUE}").stdout)
    status = json.loads(desk.read(desk.home / "home-data/.smarthomefs/status.json"))
    assert sorted(status["accounts"]) == ["tado", "tado:second"]
    out = desk.sh("smarthomefs status").stdout
    assert out.count(f"mounted at:    {desk.home}/home-data") == 2, out
    desk.sh("umount ~/home-data")
    assert findmnt(desk, desk.home / "home-data") is None
    wait_until(lambda: daemon_gone(desk), 15, "the daemon to exit after umount")
    # Each account keeps its own disk cache.
    assert (desk.home / ".cache/smarthomefs/tado").is_dir()
    assert (desk.home / ".cache/smarthomefs/tado:second").is_dir()
