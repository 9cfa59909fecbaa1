"""tado X end to end: a LINE_X home mounted beside a pre-X one. Its rooms are zones/ and
its devices devices/, read from hops (the emulator's /hops), with the value names of a
pre-X zone, so that one monitoring script reads both generations."""

import errno
import json
import os

import pytest

from rig import read, wait_until

PRE, X = "1001", "1002"
SAME_NAMES = ["inside_temperature", "humidity", "heating_power", "target_temperature", "power",
              "link", "window_open", "overlay_active"]


@pytest.fixture
def cloud_options():
    return {"tado_x_homes": 1}


def hops(rig):
    return rig.cloud.control.data()["tado"]["homes"][X]["hops"]


def requests_of(rig, prefix):
    return {k: n for k, n in rig.cloud.control.stats()["requests"].items()
            if k.split(" ", 1)[1].startswith(prefix)}


def test_x_home_beside_a_pre_x_home_shows_its_rooms_as_zones(rig):
    rig.login_tado()
    m = rig.mount()
    data = rig.cloud.control.data()["tado"]["homes"]

    assert sorted(os.listdir(m / "homes")) == [PRE, X]
    assert json.loads(read(m / f"homes/{X}/home.json"))["generation"] == "LINE_X"
    assert sorted(os.listdir(m / f"homes/{X}")) == sorted(os.listdir(m / f"homes/{PRE}"))
    rooms = hops(rig)["roomsAndDevices"]["rooms"]
    assert os.listdir(m / f"homes/{X}/zones") == [str(r["roomId"]) for r in rooms]
    for room, state in zip(rooms, hops(rig)["rooms"]):
        zdir = m / f"homes/{X}/zones/{room['roomId']}"
        assert sorted(os.listdir(zdir)) == ["history", "state.json", "units.json", "values",
                                            "zone.json"]
        assert os.listdir(zdir / "history") == []  # tado X has no day reports
        assert json.loads(read(zdir / "zone.json")) == room
        assert json.loads(read(zdir / "state.json")) == state
    assert os.listdir(m / f"homes/{PRE}/zones") == [str(z["id"]) for z in data[PRE]["zones"]]


def test_one_script_reads_the_same_value_names_on_both_generations(rig):
    rig.login_tado()
    m = rig.mount()
    pre_state = rig.cloud.control.data()["tado"]["homes"][PRE]["zoneStates"]["zoneStates"]["1"]
    x_state = hops(rig)["rooms"][0]

    pre = os.listdir(m / f"homes/{PRE}/zones/1/values")
    x = os.listdir(m / f"homes/{X}/zones/1/values")
    assert [n for n in pre if n in SAME_NAMES] == SAME_NAMES
    assert x == SAME_NAMES  # and no name a pre-X zone lacks
    # The monitoring recipe of the README, unchanged: every zone's inside temperature.
    temps = {}
    for home in os.listdir(m / "homes"):
        for zone in os.listdir(m / f"homes/{home}/zones"):
            f = m / f"homes/{home}/zones/{zone}/values/inside_temperature"
            if os.path.exists(f):
                temps[(home, zone)] = float(read(f))
    assert temps[(PRE, "1")] == pre_state["sensorDataPoints"]["insideTemperature"]["celsius"]
    assert temps[(X, "1")] == x_state["sensorDataPoints"]["insideTemperature"]["value"]
    assert len([k for k in temps if k[0] == X]) == 3
    for home in (PRE, X):
        v = m / f"homes/{home}/zones/1/values"
        assert read(v / "link") == b"ONLINE\n"  # tado X says CONNECTED in state.json
        assert read(v / "power") == b"ON\n"
        assert read(v / "window_open") == b"false\n"
    assert read(m / f"homes/{X}/zones/3/values/window_open") == b"true\n"
    assert read(m / f"homes/{X}/zones/2/values/overlay_active") == b"true\n"
    assert read(m / f"homes/{X}/zones/1/values/humidity") == \
        f"{x_state['sensorDataPoints']['humidity']['percentage']}\n".encode()
    # The units beside the values, the same on both generations.
    units = {home: json.loads(read(m / f"homes/{home}/zones/1/units.json")) for home in (PRE, X)}
    assert list(units[X]) == x
    assert {n: units[PRE][n] for n in SAME_NAMES} == units[X] == {
        "inside_temperature": "°C", "humidity": "%", "heating_power": "%",
        "target_temperature": "°C", "power": "", "link": "", "window_open": "",
        "overlay_active": ""}


def test_x_devices_are_the_rooms_devices_and_the_bridge(rig):
    rig.login_tado()
    m = rig.mount()
    rad = hops(rig)["roomsAndDevices"]
    devices = [d for r in rad["rooms"] for d in r["devices"]] + rad["otherDevices"]

    assert os.listdir(m / f"homes/{X}/devices") == [d["serialNumber"] for d in devices]
    for d in devices:
        ddir = m / f"homes/{X}/devices/{d['serialNumber']}"
        assert json.loads(read(ddir / "device.json")) == d
        assert read(ddir / "values/connected") == b"true\n"
        assert read(ddir / "values/type") == f"{d['type']}\n".encode()
        assert read(ddir / "values/firmware") == f"{d['firmwareVersion']}\n".encode()
    valve = m / f"homes/{X}/devices/{devices[0]['serialNumber']}/values"
    assert os.listdir(valve) == ["battery", "connected", "firmware", "type",
                                 "temperature_as_measured", "temperature_offset", "child_lock"]
    assert float(read(valve / "temperature_as_measured")) == devices[0]["temperatureAsMeasured"]
    pre = os.listdir(m / f"homes/{PRE}/devices/{os.listdir(m / f'homes/{PRE}/devices')[1]}/values")
    assert [n for n in os.listdir(valve) if n in pre] == ["battery", "connected", "firmware", "type"]


def test_one_rooms_call_feeds_every_rooms_state(rig):
    rig.login_tado()
    m = rig.mount()
    os.listdir(m / f"homes/{X}/zones")
    rig.cloud.control.reset_stats()

    for zone in os.listdir(m / f"homes/{X}/zones"):
        read(m / f"homes/{X}/zones/{zone}/state.json")
        for name in os.listdir(m / f"homes/{X}/zones/{zone}/values"):
            read(m / f"homes/{X}/zones/{zone}/values/{name}")
        read(m / f"homes/{X}/zones/{zone}/units.json")

    assert requests_of(rig, "/hops/") == {f"GET /hops/homes/{X}/rooms": 1}
    assert requests_of(rig, "/api/v2/") == {}


def test_a_new_room_temperature_shows_after_the_ttl(rig):
    rig.login_tado()
    rig.cloud.control.config(quota=1_000_000)  # a budget that never stretches the TTL
    m = rig.mount(extra=["ttl=1"])
    f = m / f"homes/{X}/zones/2/values/inside_temperature"
    read(f)

    rig.cloud.control.tado_zone_temperature(int(X), 2, 25.75)
    wait_until(lambda: read(f) == b"25.75\n", 20, "the new temperature in the file")


def test_a_home_of_an_unknown_generation_is_said_not_silently_empty(rig):
    rig.cloud.control.tado_generation(int(X), "LINE_Z")
    rig.login_tado()
    m = rig.mount()

    for d in ("zones", "devices"):
        with pytest.raises(OSError) as e:
            os.listdir(m / f"homes/{X}/{d}")
        assert e.value.errno == errno.EIO
    assert json.loads(read(m / f"homes/{X}/home.json"))["generation"] == "LINE_Z"
    assert os.listdir(m / f"homes/{PRE}/zones") == ["1", "2", "3"]
    status = json.loads(read(m / ".smarthomefs/status.json"))
    note = (f'home {X} is of tado generation "LINE_Z", which this smarthomefs does not know: '
            "its zones and devices are not shown")
    assert status["notes"] == [note]
    m.stop()
    assert m.log_path.read_text().count(note) == 1  # logged once, however often met
    assert requests_of(rig, "/hops/") == {}
