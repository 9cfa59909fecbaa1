"""Backups of a desktop user's mount with the README's recipes, as that user, across a
remount (what a reboot does): restic, rsync and tar --listed-incremental must each see
exactly the files whose bytes changed in the cloud, and nothing when nothing changed.

The mount is the README's own (`smarthomefs mount ~/home-data`: every account logged
in, here tado; daemonized, the options in ~/.config/smarthomefs/config) with ttl=1, so that a read after the change
sees the cloud's new value; the backup targets of the README's /srv/ are under the
user's home (~/srv/), the rest of each command is as written."""

import re
import shlex

import pytest

from rig import ROOT, user_rig, user_system, wait_until  # noqa: F401

HOME_ID = "1001"
ZONE2 = f"homes/{HOME_ID}/zones/2"
CHANGED = {f"{ZONE2}/state.json", f"{ZONE2}/values/inside_temperature"}
RESTIC_ENV = {"RESTIC_PASSWORD": "a passphrase for the test repository"}


def recipe(start):
    """The README's command line that begins with @start (continuation lines joined,
    a trailing comment dropped), its /srv/ moved to the user's $HOME/srv/."""
    lines = (ROOT / "README.md").read_text().replace("\\\n", " ").splitlines()
    found = [line.strip() for line in lines if line.strip().startswith(start)]
    assert found, f"the README has no line beginning with {start!r}"
    return re.sub(r"\s+#.*$", "", found[0]).replace("/srv/", "$HOME/srv/")


@pytest.fixture
def cloud_options():
    """A quota the tests cannot dent: with tado's 100 calls a day, smarthomefs stretches
    the 1 s TTL to spread the day's calls (session_ttl), and the new value would show
    only minutes after the remount."""
    return {"quota": 1_000_000}


@pytest.fixture
def desk(user_rig):
    """The user logged in to tado, with the config file the emulated cloud needs."""
    user_rig.login_tado()
    user_rig.write_config(extra=["ttl=1"])
    user_rig.sh("mkdir -p ~/srv/restic ~/srv/snapshots ~/srv/backup")
    return user_rig


def mount(desk):
    desk.sh("mkdir -p ~/home-data && " + recipe("smarthomefs mount ~/home-data"))
    assert desk.is_mount(desk.home / "home-data")


def unmount(desk):
    """`fusermount3 -u ~/home-data` and the daemon gone (its cache saved)."""
    desk.sh(recipe("fusermount3 -u ~/home-data"))
    wait_until(lambda: not desk.system.ns.daemons(desk.user.uid), 15,
               "the daemon to exit after the unmount")


def change_zone2_and_remount(desk):
    """The cloud's zone 2 gets warmer while the machine is off; after the mount, a read
    shows the new value (the user's check that the mount is current)."""
    unmount(desk)
    assert desk.cloud.control.tado_zone_temperature(HOME_ID, 2, 25.5)
    mount(desk)
    value = f"~/home-data/{ZONE2}/values/inside_temperature"
    wait_until(lambda: desk.sh(f"cat {value}").stdout == "25.5\n", 15,
               "the new temperature in the mount")


def remount(desk):
    unmount(desk)
    mount(desk)


def restic_backup(desk, command):
    """Runs @command (a restic backup); -> (new, changed) files of its summary."""
    r = desk.sh(command, env=dict(desk.env, **RESTIC_ENV))
    m = re.search(r"Files:\s+(\d+) new,\s+(\d+) changed,\s+(\d+) unmodified", r.stdout)
    assert m, r.stdout
    return int(m[1]), int(m[2])


def restic_diff(desk, repo):
    """What `restic diff` says of the files between the last two snapshots:
    {relative path: M (content) or U (metadata) or + or -}."""
    env = dict(desk.env, **RESTIC_ENV)
    ids = desk.sh(f"restic -r {repo} snapshots --json", env=env).stdout
    first, second = re.findall(r'"short_id":"(\w+)"', ids)[-2:]
    out = desk.sh(f"restic -r {repo} diff {first} {second}", env=env).stdout
    base = f"{desk.home}/home-data/"
    return {path[len(base):]: mark for mark, path in re.findall(r"^([-+MUT?]+)\s+(/\S+)$",
                                                                out, re.M)
            if path.startswith(base) and not path.endswith("/")}


def test_restic_after_a_remount_backs_up_only_the_two_files_that_changed(desk):
    command = recipe("restic -r /srv/restic/home-data backup ~/home-data")
    repo = shlex.split(command)[2]
    desk.sh(f"restic -r {repo} init", env=dict(desk.env, **RESTIC_ENV))
    mount(desk)
    new, changed = restic_backup(desk, command)
    assert new > 20 and changed == 0

    change_zone2_and_remount(desk)
    assert restic_backup(desk, command) == (0, 2)
    assert restic_diff(desk, repo) == {p: "M" for p in CHANGED}


@pytest.mark.parametrize("remounted", [False, True], ids=["same-mount", "remounted"])
def test_restic_of_an_unchanged_cloud_sees_nothing_changed(desk, remounted):
    """The README's `restic backup ~/home-data`, twice, nothing changed in the cloud in
    between: .smarthomefs/ (its counters change on every run) must not count."""
    command = recipe("restic -r /srv/restic/home-data backup ~/home-data")
    repo = shlex.split(command)[2]
    desk.sh(f"restic -r {repo} init", env=dict(desk.env, **RESTIC_ENV))
    mount(desk)
    restic_backup(desk, command)
    if remounted:
        remount(desk)
    assert restic_backup(desk, command) == (0, 0)
    assert restic_diff(desk, repo) == {}


def test_rsync_after_a_remount_sends_only_the_two_files_that_changed(desk):
    command = recipe("rsync -a --delete ~/home-data/")
    mount(desk)
    desk.sh(command)

    change_zone2_and_remount(desk)
    out = desk.sh(command + " --itemize-changes").stdout
    files = {line.split(None, 1)[1]: line.split()[0] for line in out.splitlines()
             if line[1:2] == "f"}
    assert set(files) == CHANGED, out
    assert all(flags.startswith(">f") for flags in files.values()), out


def test_tar_listed_incremental_after_a_remount_dumps_only_the_two_files_that_changed(desk):
    command = recipe("tar -C ~ --listed-incremental=")
    assert "--no-check-device" in command
    # One archive a level, named by the test (the recipe's names are by date).
    level = [re.sub(r'-cf ("[^"]*"|\S+)', f"-cf $HOME/srv/backup/level-{n}.tar", command)
             for n in (0, 1)]
    mount(desk)
    desk.sh(level[0])
    full = desk.sh("tar -tvf ~/srv/backup/level-0.tar").stdout
    assert f"home-data/{ZONE2}/state.json" in full

    change_zone2_and_remount(desk)
    desk.sh(level[1])
    listing = desk.sh("tar -tvf ~/srv/backup/level-1.tar").stdout
    dumped = {line.split()[-1] for line in listing.splitlines() if line.startswith("-")}
    assert dumped == {f"home-data/{p}" for p in CHANGED}, listing
