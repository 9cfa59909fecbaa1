"""Nodes of entries gone from their listing are freed once the kernel forgets them (issue
17): a cloud whose ids change on every listing costs memory, and mtimes kept on disk, for
what it lists now, not for every id it ever listed."""

import json
import os
import struct

from rig import wait_until

SHARED_VEHICLE = "dm9sa3N3YWdlbiBlbm9kZSB2ZWhpY2xlOjEyMw"  # under two homes: kept
REFRESHES = 40
# The home's four first devices end up chargers, which have a few values more or less
# than a battery, a thermostat or a vehicle: what the same number of devices may differ
# by. Never freeing, the tree would grow by some ten nodes a refresh.
KIND_SLACK = 16


def status(m):
    return json.loads((m.path / ".smarthomefs" / "status.json").read_text())


def read_device(device):
    """What a backup reads of one device: every file, which the kernel then holds."""
    (device / "device.json").read_bytes()
    (device / "units.json").read_bytes()
    for value in os.listdir(device / "values"):
        (device / "values" / value).read_bytes()


def stamps_in(path):
    """How many mtimes a stamps file keeps (its header: magic, then a u64 count)."""
    data = path.read_bytes()
    magic = b"smarthomefs stamps 1\n"
    assert data.startswith(magic)
    return struct.unpack_from("<Q", data, len(magic))[0]


def test_ids_that_change_on_every_listing_keep_nodes_and_stamps_bounded(rig):
    cache = rig.tmp / "lifetime-cache"
    m = rig.mount_tibber("ttl=0", f"cache_dir={cache}")
    control = rig.cloud.control
    home = sorted(os.listdir(m.path / "homes"))[0]
    devices = m.path / "homes" / home / "devices"
    for name in os.listdir(devices):
        read_device(devices / name)
    tree = status(m)["tree"]
    listed = tree["nodes"]
    # The memory they take is shown beside them: at least a node's 50 bytes and its name.
    assert tree["bytes"] >= listed * 56, tree

    for _ in range(REFRESHES):
        # One device leaves the home and a new one, with an id never seen, joins it.
        old = next(d for d in os.listdir(devices) if d != SHARED_VEHICLE)
        control.tibber_remove_device(old)
        new = control.tibber_add_device(home)
        names = os.listdir(devices)  # ttl=0: the listing is fetched again
        assert new in names and old not in names
        read_device(devices / new)

    # Every first device but the shared one was replaced, ten times over: the tree holds
    # what the home lists now (the kernel forgets the gone ones once told they are
    # deleted), not what it ever listed.
    bound = listed + KIND_SLACK
    wait_until(lambda: status(m)["tree"]["nodes"] <= bound, timeout=30,
               what=f"at most {bound} nodes")
    for name in os.listdir(devices):
        read_device(devices / name)
    assert status(m)["tree"]["nodes"] <= bound

    # The stamps saved for the next mount are those of what is listed now.
    m.stop()
    rig.mounts.remove(m)
    saved = stamps_in(cache / "stamps")
    assert 0 < saved <= bound, f"{saved} mtimes kept for at most {bound} nodes"
