"""Remounts (a reboot, as a backup sees it) on real mounts: every file and directory keeps
its stat (inode, size, mtime, ctime) unless its bytes, or a directory's listing, changed;
restic, rsync and tar --listed-incremental see exactly the files whose bytes changed, and
nothing when nothing changed: .smarthomefs is reachable but not listed (issue 13)."""

import json
import os
import shutil
import stat
import subprocess

from rig import read

HOME = "1001"
ZONE = "1"
# What a change of zone 1's temperature in the cloud changes: zoneStates feeds every
# zone's state.json and values/, so without the mount's memory every zone's files and
# directories would look changed after the remount.
CHANGED = {f"homes/{HOME}/zones/{ZONE}/state.json",
           f"homes/{HOME}/zones/{ZONE}/values/inside_temperature"}


def mount(rig):
    """A mount that asks the cloud at every read (ttl=0, a quota that never stretches it),
    so a remount sees at once what changed in the cloud meanwhile."""
    rig.cloud.control.config(quota=1_000_000)
    return rig.mount(extra=["ttl=0"])


def remount(rig, m):
    """Unmounts @m and mounts the same account on the same directory again."""
    m.stop()
    rig.mounts.remove(m)
    m2 = mount(rig)
    assert m2.path == m.path
    return m2


def walk(root):
    """{path: stat} of the mount's root and of every directory and file below it, as a
    backup tool meets them (listed, then stat'd), and {file path: bytes}."""
    stats, data = {".": os.lstat(root)}, {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            stats[rel] = os.lstat(p)
            if name in filenames:
                data[rel] = read(p)
    return stats, data


def kept(st):
    """What a backup tool compares to tell a changed file: restic inode, size, mtime and
    ctime; rsync size and mtime; tar --listed-incremental mtime, ctime and inode."""
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, stat.S_IFMT(st.st_mode))


def kept_all(stats):
    return {p: kept(st) for p, st in stats.items()}


def change_zone(rig):
    zone = rig.cloud.control.data()["tado"]["homes"][HOME]["zoneStates"]["zoneStates"][ZONE]
    celsius = zone["sensorDataPoints"]["insideTemperature"]["celsius"] + 1.5
    rig.cloud.control.tado_zone_temperature(HOME, ZONE, celsius)


def test_a_remount_keeps_every_stat_but_those_of_the_files_whose_bytes_changed(rig):
    rig.login_tado()
    m = mount(rig)
    first, _ = walk(m.path)
    before, old = walk(m.path)
    # What a first backup saw is what the mount shows until its unmount.
    assert kept_all(first) == kept_all(before)
    assert len(old) > 20

    change_zone(rig)
    m = remount(rig, m)
    after, new = walk(m.path)

    assert after.keys() == before.keys()
    assert {p for p in old if new[p] != old[p]} == CHANGED
    differs = {p for p in before if kept(after[p]) != kept(before[p])}
    assert differs == CHANGED
    for p in CHANGED:
        assert after[p].st_ino == before[p].st_ino
        assert after[p].st_mtime_ns > before[p].st_mtime_ns
        assert after[p].st_ctime_ns == after[p].st_mtime_ns
        assert after[p].st_size == len(new[p])
    # A second remount with nothing changed shows all of it again.
    m = remount(rig, m)
    again, _ = walk(m.path)
    assert kept_all(again) == kept_all(after)


def test_an_unchanged_cloud_looks_the_same_after_a_remount_and_smarthomefs_is_not_listed(rig):
    rig.login_tado()
    m = mount(rig)
    before, _ = walk(m.path)
    assert ".smarthomefs" not in os.listdir(m.path)
    assert not any(p.startswith(".smarthomefs") for p in before)

    m = remount(rig, m)
    after, _ = walk(m.path)
    assert kept_all(after) == kept_all(before)
    # Not listed, but there by its path, for status checks and node_exporter.
    assert json.loads(read(m / ".smarthomefs/status.json"))["account"] == "tado"
    assert read(m / ".smarthomefs/metrics")
    assert stat.S_ISDIR(os.stat(m / ".smarthomefs").st_mode)
    assert sorted(os.listdir(m / ".smarthomefs")) == ["metrics", "status.json"]


def run(*cmd, quiet=False, **kw):
    """Runs a backup tool, which must succeed (@quiet: without a word on stderr, where tar
    warns of a file that changed as it read it); -> its stdout."""
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)
    assert r.returncode == 0 and (r.stderr == "" or not quiet), r.stderr
    return r.stdout


def restic(rig, repo, *args, cwd=None):
    env = dict(os.environ, RESTIC_PASSWORD="not a secret of the cloud",
               RESTIC_CACHE_DIR=str(rig.tmp / "restic-cache"))
    return run("restic", "-r", str(repo), *args, env=env, cwd=cwd)


def restic_backup(rig, repo, path):
    """Backs @path up as the README says; -> restic's summary of it. The path is given
    relative to its parent, so that the snapshot holds no directory above the mount (the
    test's own directory, which changes with every mount's log)."""
    out = restic(rig, repo, "backup", "--json", path.name, cwd=path.parent)
    summaries = [json.loads(line) for line in out.splitlines()
                 if line.startswith("{") and '"summary"' in line]
    assert len(summaries) == 1, out
    return summaries[0]


def test_restic_sees_only_the_changed_files_after_a_remount_and_nothing_when_nothing_changed(rig):
    rig.login_tado()
    repo = rig.tmp / "restic"
    restic(rig, repo, "init")
    m = mount(rig)
    first = restic_backup(rig, repo, m.path)
    assert first["files_new"] > 20

    # The README's recipe with nothing changed, in the same mount and after a remount.
    same = restic_backup(rig, repo, m.path)
    m = remount(rig, m)
    unchanged = restic_backup(rig, repo, m.path)
    for s, before in ((same, first), (unchanged, same)):
        what = restic(rig, repo, "diff", "--metadata", before["snapshot_id"],
                      s["snapshot_id"])
        assert (s["files_new"], s["files_changed"], s["dirs_new"]) == (0, 0, 0), what
    # restic keeps each node's device number in its trees: a new mount has a new one
    # (as NFS has), so directories count as changed after a remount unless the kernel
    # happened to give the same number; within one mount, none does.
        assert s["files_unmodified"] == first["files_new"]
    assert same["dirs_changed"] == 0

    change_zone(rig)
    m = remount(rig, m)
    changed = restic_backup(rig, repo, m.path)
    assert (changed["files_new"], changed["files_changed"]) == (0, len(CHANGED)), changed
    assert changed["files_unmodified"] == first["files_new"] - len(CHANGED)


def rsync(src, dest):
    """rsync -a as the README says, itemized; -> the lines of what it changed."""
    return run("rsync", "-a", "--delete", "--itemize-changes", f"{src}/", f"{dest}/",
               quiet=True).splitlines()


def test_rsync_sends_only_the_changed_files_after_a_remount(rig):
    rig.login_tado()
    dest = rig.tmp / "snapshot"
    m = mount(rig)
    assert len(rsync(m.path, dest)) > 20
    m = remount(rig, m)
    assert rsync(m.path, dest) == []

    change_zone(rig)
    m = remount(rig, m)
    lines = rsync(m.path, dest)
    # ">f..t......": a file sent again; no line for a directory whose time changed.
    assert {line.split(" ", 1)[1] for line in lines} == CHANGED, lines
    assert all(line.startswith(">f") for line in lines), lines


def test_tar_listed_incremental_dumps_only_the_changed_files_after_a_remount(rig):
    rig.login_tado()
    snar = rig.tmp / "home-data.snar"
    m = mount(rig)

    def dump(level):
        archive = rig.tmp / f"level{level}.tar"
        # A new FUSE mount has a new device number, as NFS has: --no-check-device.
        run("tar", "--create", f"--listed-incremental={snar}", "--no-check-device",
            "-f", str(archive), "-C", str(m.path), ".", quiet=True)
        return run("tar", "-tvf", str(archive)).splitlines()

    # Right after the mount, as a backup at boot: tar dumps again at the next level any
    # file whose mtime or ctime is after the start of this dump, so a file first read
    # during it must not show the time of that read.
    full = dump(0)
    assert len([x for x in full if not x.startswith("d")]) > 20
    change_zone(rig)
    m = remount(rig, m)
    files = [x.split()[-1] for x in dump(1) if not x.startswith("d")]
    assert sorted(files) == sorted(f"./{p}" for p in CHANGED)
