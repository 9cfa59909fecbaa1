"""Tibber device history as files (issue 15): homes/H/devices/D/history/<resolution>/
<period>.json and .csv, one file a period, the pages of a period joined. A finished period
is fetched once and kept for good with its end as mtime; today's file follows the TTL;
listing costs no call. Times are the emulator's: its clock is set to a known time of day
first (so that no test runs into a UTC midnight it did not ask for), and moved forward to
make a day pass."""

import csv
import datetime
import io
import json
import os
import re
import subprocess

import pytest

from rig import ROOT, read, wait_until

HOME1 = "92b82b1f-0196-56ab-bd6e-3588c700d94b"
CHARGER = "ZWFzZWUgZW5vZGUgY2hhcmdlcjoxMDA"    # hour, day, month; 10 points a page
BATTERY = "c29ubmVuIGVub2RlIGJhdHRlcnk6MTAx"    # quarterHour, hour, day; 40 a page
THERMOSTAT = "bmV0YXRtbyBlbm9kZSB0aGVybW9zdGF0OjEwMg"  # hour, day; 7 a page
VEHICLE = "dm9sa3N3YWdlbiBlbm9kZSB2ZWhpY2xlOjEyMw"  # no history
DAY = 86400


def history(m, device=CHARGER):
    return m / "homes" / HOME1 / "devices" / device / "history"


def set_time_of_day(cloud, hour):
    """Moves the emulator's clock forward to the next @hour:00 UTC; -> that day's
    midnight (unix s)."""
    now = cloud.control.clock()["now_s"]
    cloud.control.advance_clock((hour * 3600 - now % DAY) % DAY)
    now = cloud.control.clock()["now_s"]
    return int(now) // DAY * DAY


def day_name(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%d")


def iso_s(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def history_calls(rig):
    return rig.cloud.control.stats()["tibber_history_calls"]


def api_calls(m):
    return json.loads(read(m / ".smarthomefs" / "status.json"))["api_calls"]


def walk(root):
    """Reads every file under @root as a backup does: {path: (bytes, size, mtime)}."""
    seen = {}
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            data = read(path)
            st = os.stat(path)
            seen[path] = (data, st.st_size, st.st_mtime)
    return seen


def pages_by_period(calls):
    """The history calls grouped by what they fetched: (device, resolution, until)."""
    groups = {}
    for c in calls:
        groups.setdefault((c["device"], c["resolution"], c["until"]), []).append(c)
    return groups


@pytest.fixture
def today(rig):
    return set_time_of_day(rig.cloud, 10)


def test_a_walk_fetches_each_period_once_and_none_on_a_second_walk_or_after_a_remount(
        rig, today):
    m = rig.mount_tibber("history_days=3", "ttl=1")
    calls_before = api_calls(m)
    first = walk(history(m))

    names = sorted(os.path.relpath(p, history(m)) for p in first)
    days = [day_name(today - 2 * DAY), day_name(today - DAY), day_name(today)]
    assert names == sorted([f"day/{days[0][:7]}.{e}" for e in ("csv", "json")] +
                           [f"hour/{d}.{e}" for d in days for e in ("csv", "json")] +
                           [f"month/{days[0][:4]}.{e}" for e in ("csv", "json")]
                           + ([f"day/{days[2][:7]}.{e}" for e in ("csv", "json")]
                              if days[0][:7] != days[2][:7] else [])
                           + ([f"month/{days[2][:4]}.{e}" for e in ("csv", "json")]
                              if days[0][:4] != days[2][:4] else []))
    calls = history_calls(rig)
    groups = pages_by_period(calls)
    # One group of pages per period (a .json and its .csv share them), each page asked
    # once: the first from the period's start, each next one from where the last ended.
    assert len(groups) == len(names) // 2
    for (_, resolution, until), pages in groups.items():
        sinces = [p["since"] for p in pages]
        assert len(set(sinces)) == len(sinces), (resolution, until, sinces)
        assert sinces == sorted(sinces, key=iso_s)
    # A full day of hours is 24 points, 10 a page: three pages.
    assert len(groups[(CHARGER, "hour", f"{days[2]}T00:00:00Z")]) == 3  # yesterday's
    # status.json counts every page as a call, and nothing else was called but the
    # device's detail (what says which resolutions it has).
    requests = rig.cloud.control.stats()["requests"]
    assert api_calls(m) - calls_before == sum(requests.values())
    # The finished periods are kept apart from the other copies, and say how much.
    status = json.loads(read(m / ".smarthomefs" / "status.json"))
    pinned = sorted((rig.home / ".cache" / "smarthomefs" / "tibber" / "pinned").iterdir())
    assert status["cache"]["pinned_bytes"] == sum(p.stat().st_size for p in pinned) > 0
    assert len(pinned) == sum(1 for (_, _, until) in groups if iso_s(until) <= today)
    assert sum(n for k, n in requests.items() if k.endswith("/history")) == len(calls)

    # Walks go on until the TTL (1 s) has had today's periods fetched again: the finished
    # ones never are.
    def refetched_today():
        assert walk(history(m)) == first
        return len(history_calls(rig)) > len(calls)
    wait_until(refetched_today, 20, "a walk after the TTL to fetch today's periods again")
    now = rig.cloud.control.clock()["now_s"]
    assert all(iso_s(c["until"]) > now for c in history_calls(rig)[len(calls):])

    m.stop()
    rig.cloud.control.reset_stats()
    m = rig.mount("tibber", extra=["history_days=3", "ttl=1"])
    calls = []
    wait_until(refetched_today, 20, "a walk after the remount to fetch today's periods")
    assert all(iso_s(c["until"]) > now for c in history_calls(rig))


def test_pages_join_in_order_without_gap_or_overlap_and_the_csv_agrees(rig, today):
    m = rig.mount_tibber("history_days=2")
    yesterday = day_name(today - DAY)
    for device, resolution, points in ((CHARGER, "hour", 24), (THERMOSTAT, "hour", 24),
                                       (BATTERY, "quarterHour", 96)):
        base = history(m, device) / resolution
        doc = json.loads(read(base / f"{yesterday}.json"))
        data = doc["data"]
        assert doc["resolution"] == resolution
        assert (iso_s(doc["from"]), iso_s(doc["to"])) == (today - DAY, today)
        assert len(data) == points
        assert iso_s(data[0]["from"]) == today - DAY and iso_s(data[-1]["to"]) == today
        assert all(iso_s(a["to"]) == iso_s(b["from"]) for a, b in zip(data, data[1:]))
        # The CSV: a header naming each metric with its unit, then the same rows.
        text = read(base / f"{yesterday}.csv").decode()
        rows = list(csv.reader(io.StringIO(text)))
        metrics = list(data[0]["metrics"])
        assert rows[0][:2] == ["from", "to"]
        assert [h.split("[")[0] for h in rows[0][2:]] == metrics
        assert len(rows) == 1 + points
        for row, point in zip(rows[1:], data):
            assert iso_s(row[0]) == iso_s(point["from"]) and iso_s(row[1]) == iso_s(point["to"])
            assert [float(v) for v in row[2:]] == [point["metrics"][k] for k in metrics]
        for name in (f"{yesterday}.json", f"{yesterday}.csv"):
            assert os.stat(base / name).st_size == len(read(base / name))
    units = list(csv.reader(io.StringIO(
        read(history(m, BATTERY) / "hour" / f"{yesterday}.csv").decode())))[0]
    assert units == ["from", "to", "energyCharged[kWh]", "energyDischarged[kWh]",
                     "stateOfCharge[%]"]


def test_todays_file_changes_as_time_passes_and_yesterdays_never(rig, today):
    m = rig.mount_tibber("history_days=2", "ttl=1")
    hour = history(m) / "hour"
    yesterday_json = hour / f"{day_name(today - DAY)}.json"
    today_json = hour / f"{day_name(today)}.json"
    before = read(yesterday_json)
    before_mtime = os.stat(yesterday_json).st_mtime
    points = len(json.loads(read(today_json))["data"])
    assert points == 9  # 00:00 to 09:00: the last hour is in 5 minutes after it ends
    assert before_mtime == today  # the period's end
    first_calls = len(history_calls(rig))

    rig.cloud.control.advance_clock(2 * 3600)
    wait_until(lambda: len(json.loads(read(today_json))["data"]) == 11, 20,
               "today's file to show the two hours that passed")
    assert os.stat(today_json).st_size == len(read(today_json))
    assert read(yesterday_json) == before
    assert os.stat(yesterday_json).st_mtime == before_mtime
    yesterday_until = f"{day_name(today)}T00:00:00Z"
    assert [c for c in history_calls(rig)[first_calls:] if c["until"] == yesterday_until] == []

    # Midnight passes: today's file becomes yesterday's, fetched once more (complete)
    # and kept for good, its mtime the day's end; a new today appears.
    rig.cloud.control.advance_clock(14 * 3600)
    tomorrow = day_name(today + DAY)
    wait_until(lambda: f"{tomorrow}.json" in os.listdir(hour), 20,
               "the listing to show the new day")
    assert f"{day_name(today - DAY)}.json" not in os.listdir(hour)  # history_days=2
    done = json.loads(read(today_json))
    assert len(done["data"]) == 24
    assert os.stat(today_json).st_mtime == today + DAY
    calls = len(history_calls(rig))
    for _ in range(3):
        assert json.loads(read(today_json)) == done
    assert len(history_calls(rig)) == calls


def test_listing_a_history_directory_costs_no_call(rig, today):
    m = rig.mount_tibber("history_days=31")
    hour = history(m) / "hour"
    names = os.listdir(hour)
    assert len(names) == 2 * 31
    assert sorted(os.listdir(history(m))) == ["day", "hour", "month"]
    assert os.listdir(history(m, VEHICLE)) == []
    assert history_calls(rig) == []
    # Stat'ing one file costs its period's pages, and gives its exact size.
    st = os.stat(hour / f"{day_name(today - 5 * DAY)}.csv")
    assert len(history_calls(rig)) == 3
    assert st.st_size == len(read(hour / f"{day_name(today - 5 * DAY)}.csv"))
    assert len(history_calls(rig)) == 3


def test_history_days_0_shows_no_history(rig):
    m = rig.mount_tibber("history_days=0")
    assert sorted(os.listdir(m / "homes" / HOME1 / "devices" / CHARGER)) == [
        "device.json", "units.json", "values"]


def test_the_readmes_awk_one_liner_sums_a_days_csv(rig, today):
    m = rig.mount_tibber("history_days=2")
    readme = (ROOT / "README.md").read_text()
    program = re.search(r"awk -F, '([^']*)'", readme).group(1)
    csv_file = history(m) / "hour" / f"{day_name(today - DAY)}.csv"
    out = subprocess.run(["awk", "-F,", program, str(csv_file)], capture_output=True,
                         text=True, check=True).stdout
    data = json.loads(read(csv_file.with_suffix(".json")))["data"]
    total = sum(p["metrics"]["energyCharged"] for p in data)
    assert out.endswith(" kWh\n") and abs(float(out.split()[0]) - total) < 1e-6


def restic(rig, repo, *args, cwd=None):
    env = dict(os.environ, RESTIC_PASSWORD="not a secret of the cloud",
               RESTIC_CACHE_DIR=str(rig.tmp / "restic-cache"))
    r = subprocess.run(["restic", "-r", str(repo), *args], capture_output=True, text=True,
                       timeout=120, env=env, cwd=cwd)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_nightly_restic_stores_each_day_once_and_each_night_costs_the_new_days_pages(rig):
    """The issue's "done when": a restic backup every night; after each, the day moves on.
    The repository holds each finished day once: a later night changes no finished period,
    and the calls of a night are the pages of the periods that were new or not finished."""
    start = set_time_of_day(rig.cloud, 2)  # 02:00, as a nightly job runs
    m = rig.mount_tibber("history_days=3", "ttl=1")
    repo = rig.tmp / "restic"
    restic(rig, repo, "init")
    devices = [CHARGER, BATTERY, THERMOSTAT]
    hours = [history(m, d) / "hour" for d in devices]
    snapshots = []
    for night in range(4):
        today = start + night * DAY
        wait_until(lambda: all(f"{day_name(today)}.json" in os.listdir(h) for h in hours), 20,
                   "every device's listing to show the new day")
        calls_before, history_before = api_calls(m), len(history_calls(rig))
        requests_before = sum(rig.cloud.control.stats()["requests"].values())
        restic(rig, repo, "backup", "--json", m.path.name, cwd=m.path.parent)
        snapshots.append(json.loads(restic(rig, repo, "snapshots", "--json"))[-1]["short_id"])
        requests = rig.cloud.control.stats()["requests"]
        calls = history_calls(rig)[history_before:]
        # status.json counts every page the night fetched, and each page once.
        assert api_calls(m) - calls_before == sum(requests.values()) - requests_before
        assert len({(c["device"], c["resolution"], c["until"], c["since"]) for c in calls}) \
            == len(calls)
        if night:
            # Only periods that hold now or ended since the last night were fetched ...
            last_night = today - DAY
            assert all(iso_s(c["until"]) > last_night for c in calls), calls
            # ... and only their files changed in the repository.
            diff = restic(rig, repo, "diff", snapshots[-2], snapshots[-1])
            lines = [line.split(None, 1) for line in diff.splitlines()
                     if line[:1] in "M+-" and "/history/" in line]
            for change, path in lines:
                name = os.path.basename(path).split(".")[0]
                if change == "-":  # left the listing: older than history_days
                    assert name < day_name(today - 2 * DAY)[:len(name)], (path, diff)
                else:
                    assert name >= day_name(last_night)[:len(name)], (path, diff)
            assert any(c == "+" and day_name(today) in p for c, p in lines), diff
        rig.cloud.control.advance_clock(DAY)


def test_a_day_read_just_after_midnight_is_final_only_when_its_late_data_is_in(rig, today):
    """The cloud adds an interval a few minutes after it ends: a day read at 00:02 lacks
    its last hour. It is not pinned then; read after it settled (an hour), it is complete
    and kept for good."""
    m = rig.mount_tibber("history_days=2", "ttl=1")
    hour = history(m) / "hour"
    rig.cloud.control.advance_clock(14 * 3600 + 120)  # 00:02 the next day
    day = hour / f"{day_name(today)}.json"
    wait_until(lambda: f"{day_name(today + DAY)}.json" in os.listdir(hour), 20,
               "the listing to show the new day")
    assert len(json.loads(read(day))["data"]) == 23
    assert os.stat(day).st_mtime == today + DAY  # ended: its end is its time already
    rig.cloud.control.advance_clock(5 * 60)
    wait_until(lambda: len(json.loads(read(day))["data"]) == 24, 20,
               "the last hour to arrive while the day settles")
    rig.cloud.control.advance_clock(3600)  # 01:07: settled
    until = f"{day_name(today + DAY)}T00:00:00Z"
    today_until = f"{day_name(today + 2 * DAY)}T00:00:00Z"
    today_file = hour / f"{day_name(today + DAY)}.json"

    def read_until_today_was_fetched_twice():
        """Reads the day and today's file until today's was fetched again twice: the
        TTL (1 s) has passed at least once meanwhile. -> the day's calls meanwhile."""
        start = len(history_calls(rig))

        def fetched_twice():
            read(day)
            read(today_file)
            first_page = f"{day_name(today + DAY)}T00:00:00Z"
            return sum(c["until"] == today_until and c["since"] == first_page
                       for c in history_calls(rig)[start:]) >= 2
        wait_until(fetched_twice, 30, "today's file to be fetched again twice")
        return [c for c in history_calls(rig)[start:] if c["until"] == until]

    read_until_today_was_fetched_twice()  # the day fetched once more, final
    done = read(day)
    assert len(json.loads(done)["data"]) == 24
    assert read_until_today_was_fetched_twice() == []  # and never again
    assert read(day) == done
    # Its bytes changed after its end (the late hour): a new mtime, just after the end.
    assert today + DAY < os.stat(day).st_mtime < today + DAY + 1
