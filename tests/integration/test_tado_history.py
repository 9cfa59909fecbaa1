"""tado° history: a zone's day reports as homes/<h>/zones/<z>/history/<YYYY-MM-DD>.json and
.csv, filled in the background within a share of the daily quota (history_budget=), a
history directory listing only what can be read without a call."""

import csv
import datetime
import io
import json
import os
import zoneinfo

from rig import read, wait_until

HOME = "1001"
QUOTA = 40  # tado's 100 a day, shortened
BUDGET = 25  # percent: the fill may spend 10 calls a window, and leaves the user 30
USERS_SHARE = QUOTA - QUOTA * BUDGET // 100


def status(m):
    return json.loads(read(m / ".smarthomefs/status.json"))


def remaining(m):
    return status(m)["rate_limit"]["remaining"]


def history(m, zone):
    return sorted(os.listdir(m / f"homes/{HOME}/zones/{zone}/history"))


def listed(m):
    """Every history file listed, as zone/name."""
    return sorted(f"{z}/{n}" for z in (1, 2, 3) for n in history(m, z))


def day_calls(rig):
    return sum(rig.cloud.control.stats()["day_reports"].values())


def assert_no_429(rig):
    assert rig.cloud.control.stats()["too_many_requests_by_window"] == {}


def assert_every_listed_file_reads_without_a_call(rig, m):
    stats = rig.cloud.control.stats()
    files = listed(m)
    for f in files:
        zone, name = f.split("/")
        assert read(m / f"homes/{HOME}/zones/{zone}/history/{name}"), f
    after = rig.cloud.control.stats()
    assert after["day_reports"] == stats["day_reports"]
    assert sum(after["requests"].values()) == sum(stats["requests"].values())
    return files


def assert_csv_agrees_with_json(m, zone, day):
    base = m / f"homes/{HOME}/zones/{zone}/history/{day}"
    report = json.loads(read(base.with_suffix(".json")))
    rows = list(csv.DictReader(io.StringIO(read(base.with_suffix(".csv")).decode())))
    # the rows are the home's local day: the report's points without its 15 minutes either side
    points = report["measuredData"]["insideTemperature"]["dataPoints"][1:]
    points = points[:report["hoursInDay"] * 4]
    humidity = {p["timestamp"]: p["value"] for p in
                report["measuredData"]["humidity"]["dataPoints"]}
    assert [r["time"] for r in rows] == [p["timestamp"] for p in points]
    for row, p in zip(rows, points):
        assert float(row["inside_temperature[°C]"]) == p["value"]["celsius"]
        assert float(row["humidity[%]"]) == round(humidity[p["timestamp"]] * 100, 1)
        assert row["call_for_heat"] in ("NONE", "LOW", "MEDIUM", "HIGH")
        assert row["power"] == "ON" and float(row["setpoint[°C]"]) >= 17.0
        assert row["weather"] and row["sunny"] in ("true", "false")


def test_a_small_budget_fills_history_in_the_background_without_a_429(rig):
    rig.login_tado()
    rig.cloud.control.config(quota=QUOTA)
    m = rig.mount(extra=["history_days=8", f"history_budget={BUDGET}"])
    # The user looks once: the answers tell the budget, and the fill starts.
    assert "history" in os.listdir(m / f"homes/{HOME}/zones/1")
    # It spends its share and stops, leaving the user's share whole.
    wait_until(lambda: remaining(m) == USERS_SHARE and listed(m), 30, "the fill to spend its share")
    files = assert_every_listed_file_reads_without_a_call(rig, m)
    assert_no_429(rig)
    # Each day was asked once, and only for the two heating zones: the hot water zone
    # has no day reports and an empty history/.
    reports = rig.cloud.control.stats()["day_reports"]
    assert set(reports.values()) == {1}
    assert {k.split("/")[1] for k in reports} == {"1", "2"}
    assert history(m, 3) == []
    assert len(files) == 2 * len(reports)  # a .json and a .csv a day
    assert all(f"{f[:-len('.json')]}.csv" in files for f in files if f.endswith(".json"))
    # The newest days first: yesterday and before are final, pinned, with the end of the
    # day (and tado's 15 minutes) as their mtime, which says nothing of when they came.
    days = sorted({f.split("/")[1][:10] for f in files})
    for f in files:
        zone, name = f.split("/")
        st = os.stat(m / f"homes/{HOME}/zones/{zone}/history/{name}")
        assert st.st_size == len(read(m / f"homes/{HOME}/zones/{zone}/history/{name}"))
    finished = [d for d in days if d != days[-1]]
    assert finished, days
    for d in finished:
        assert_csv_agrees_with_json(m, 1 if f"1/{d}.json" in files else 2, d)
    # What is listed reads without the cloud: with every call refused, all of it still does.
    rig.cloud.control.fail(kind="429", count=1000)
    assert assert_every_listed_file_reads_without_a_call(rig, m) == files


def test_the_history_grows_as_the_budget_refills_and_a_remount_costs_no_call(rig):
    rig.login_tado()
    rig.cloud.control.config(quota=QUOTA)
    m = rig.mount(extra=["history_days=8", f"history_budget={BUDGET}"])
    os.listdir(m / f"homes/{HOME}/zones/1/history")
    wait_until(lambda: remaining(m) == USERS_SHARE and listed(m), 30, "the fill to spend its share")
    first = listed(m)
    mtimes = {f: os.stat(m / f"homes/{HOME}/zones/{f.replace('/', '/history/')}").st_mtime
              for f in first}
    # The second walk of the history costs nothing.
    assert_every_listed_file_reads_without_a_call(rig, m)
    # A day later on the cloud's clock the quota has refilled; the next answer to a read
    # of the user's says so, and the fill takes its share of the new window.
    rig.cloud.control.advance_clock(86400)
    os.listdir(m / f"homes/{HOME}/devices")
    wait_until(lambda: len(listed(m)) > len(first) and remaining(m) == USERS_SHARE, 30,
               "the history to grow")
    assert_no_429(rig)
    grown = assert_every_listed_file_reads_without_a_call(rig, m)
    # A finished day keeps its bytes and its mtime.
    for f in first:
        path = m / f"homes/{HOME}/zones/{f.replace('/', '/history/')}"
        if f in grown and f[2:12] != max(x[2:12] for x in first):
            assert os.stat(path).st_mtime == mtimes[f], f
    m.stop()
    rig.mounts.remove(m)
    # The next mount shows what it kept on disk, and reading it costs no call.
    rig.cloud.control.reset_stats()
    m2 = rig.mount(extra=["history_days=8", f"history_budget={BUDGET}"])
    again = assert_every_listed_file_reads_without_a_call(rig, m2)
    assert again and set(again) <= set(grown)
    assert rig.cloud.control.stats()["day_reports"] == {}


def test_days_before_a_zone_existed_are_asked_once_and_never_listed(rig):
    rig.login_tado()
    rig.cloud.control.config(quota=100)
    rig.cloud.control.tado_zone_created(HOME, 2, days_ago=1)
    m = rig.mount(extra=["history_days=4", "history_budget=50"])
    os.listdir(m / f"homes/{HOME}/zones/2/history")
    # zone 1: 4 days; zone 2: yesterday and today, and 2 days tado refuses (422)
    wait_until(lambda: len(rig.cloud.control.stats()["day_reports"]) == 8 and
               len(listed(m)) == 2 * 6, 30, "the fill to ask every day once")
    reports = rig.cloud.control.stats()["day_reports"]
    assert set(reports.values()) == {1}
    days_2 = history(m, 2)
    assert len(days_2) == 4 and all(f"1/{d}" in listed(m) for d in days_2)
    assert_every_listed_file_reads_without_a_call(rig, m)
    assert_no_429(rig)
    assert "not available" in m.log_path.read_text()


def test_todays_file_follows_the_ttl_and_yesterdays_never_changes(rig):
    rig.login_tado()
    rig.cloud.control.config(quota=1_000_000)  # a budget that never stretches the TTL
    # Far enough from the home's midnight that "today" stays today.
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    now = datetime.datetime.fromtimestamp(rig.cloud.control.clock()["now_s"], berlin)
    if now.hour >= 21:
        rig.cloud.control.advance_clock((24 - now.hour + 1) * 3600)
    m = rig.mount(extra=["history_days=2", "ttl=1"])
    hist = m / f"homes/{HOME}/zones/1/history"
    os.listdir(hist)
    wait_until(lambda: len(os.listdir(hist)) == 4, 30, "yesterday and today")
    yesterday, today = sorted({n[:10] for n in os.listdir(hist)})
    before = {n: (read(hist / n), os.stat(hist / n).st_mtime) for n in os.listdir(hist)}
    rig.cloud.control.advance_clock(1800)
    wait_until(lambda: read(hist / f"{today}.csv") != before[f"{today}.csv"][0], 30,
               "today's file to change")
    assert len(read(hist / f"{today}.csv").splitlines()) > len(
        before[f"{today}.csv"][0].splitlines())
    for name in (f"{yesterday}.json", f"{yesterday}.csv"):
        assert (read(hist / name), os.stat(hist / name).st_mtime) == before[name]
    assert rig.cloud.control.stats()["day_reports"][f"{HOME}/1/{yesterday}"] == 1


def test_yesterdays_file_stays_listed_through_the_homes_midnight(rig):
    """A nightly backup at 00:30 sees yesterday's file: with the bytes it had, then its final
    copy once the fill could fetch it, never missing from a listing in between."""
    rig.login_tado()
    rig.cloud.control.config(quota=QUOTA)
    # 23:40 in the home: the fill spends its share before midnight, today's file first,
    # and has none left until the quota's window resets (11:24 UTC).
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    now = datetime.datetime.fromtimestamp(rig.cloud.control.clock()["now_s"], berlin)
    evening = datetime.datetime.combine(now.date(), datetime.time(23, 40), berlin)
    if evening <= now:
        evening = datetime.datetime.combine(now.date() + datetime.timedelta(days=1),
                                            datetime.time(23, 40), berlin)
    rig.cloud.control.advance_clock(evening.timestamp() - now.timestamp())
    m = rig.mount(extra=["history_days=8", f"history_budget={BUDGET}"])
    hist = m / f"homes/{HOME}/zones/1/history"
    day = evening.date().isoformat()
    names = (f"{day}.json", f"{day}.csv")
    os.listdir(hist)
    wait_until(lambda: remaining(m) == USERS_SHARE and set(names) <= set(os.listdir(hist)),
               30, "the fill to spend its share, today's file first")
    before = {n: (read(hist / n), os.stat(hist / n).st_mtime) for n in names}
    everything = listed(m)
    calls = day_calls(rig)

    # 00:30 in the home: the day has ended, and tado's 15 minutes after it.
    rig.cloud.control.advance_clock(50 * 60)
    # A read of the user's brings the cloud's clock to the mount (its Date).
    read(m / f"homes/{HOME}/weather.json")
    tomorrow = (evening.date() + datetime.timedelta(days=1)).isoformat()
    assert tomorrow not in {n[:10] for n in os.listdir(hist)}  # not fetched yet
    # What the backup sees: every file listed before, yesterday's with the bytes and the
    # mtime it had, read from its copy without a call.
    assert sorted(set(everything) - set(listed(m))) == []
    for n in names:
        assert (read(hist / n), os.stat(hist / n).st_mtime) == before[n], n
    assert day_calls(rig) == calls
    assert remaining(m) == USERS_SHARE - 1  # the weather, nothing for history

    # The window resets; the next answer to a read of the user's says so, and the fill
    # fetches the new day and yesterday's final copy. The listing never loses yesterday.
    rig.cloud.control.advance_clock(14 * 3600)  # past 11:24 UTC in summer time too
    read(m / f"homes/{HOME}/state.json")
    absent = []

    def final_fetched():
        now_listed = listed(m)
        absent.extend(f for f in everything if f not in now_listed)
        return rig.cloud.control.stats()["day_reports"].get(f"{HOME}/1/{day}") == 2

    wait_until(final_fetched, 30, "the fill to fetch yesterday's final copy")
    assert absent == []
    # The file changes once, to the whole day, with the home's midnight and tado's 15
    # minutes as its mtime.
    final_csv = wait_until(lambda: (b := read(hist / names[1])) != before[names[1]][0] and b,
                           10, "yesterday's file to show its final copy")
    midnight = datetime.datetime.combine(evening.date() + datetime.timedelta(days=1),
                                         datetime.time(0), berlin)
    start = datetime.datetime.combine(evening.date(), datetime.time(0), berlin)
    hours = round((midnight.timestamp() - start.timestamp()) / 3600)  # 23 or 25 on a DST day
    assert len(final_csv.splitlines()) == 1 + hours * 4  # the header and every quarter hour
    report = json.loads(read(hist / names[0]))
    assert report["interval"]["to"].startswith(
        (midnight + datetime.timedelta(minutes=15)).astimezone(datetime.timezone.utc)
        .strftime("%Y-%m-%dT%H:%M"))
    for n in names:
        assert os.stat(hist / n).st_mtime == midnight.timestamp() + 15 * 60, n
    assert sorted(set(everything) - set(listed(m))) == []
    assert rig.cloud.control.stats()["day_reports"][f"{HOME}/1/{day}"] == 2
    assert_no_429(rig)


def test_a_day_the_cloud_failed_to_answer_is_asked_again_soon_within_the_budget(rig):
    """A 500 is the cloud's hiccup, not its answer: the day is asked again within seconds
    (not a day later), by the fill's share alone, and is listed then."""
    rig.login_tado()
    rig.cloud.control.config(quota=QUOTA)
    m = rig.mount(extra=["history_days=2", f"history_budget={BUDGET}"])
    # Every try of zone 1's first day report (the HTTP client's three) fails.
    rig.cloud.control.fail(kind="500", count=3, path=f"/homes/{HOME}/zones/1/dayReport")
    os.listdir(m / f"homes/{HOME}/zones/1/history")
    wait_until(lambda: rig.cloud.control.faults() == [], 30, "the fill to meet the failure")
    wait_until(lambda: len(history(m, 1)) == 4 and len(history(m, 2)) == 4, 30,
               "both days of both zones, the one that failed too")
    log = m.log_path.read_text()
    assert "could not be fetched" in log and "not available" not in log
    assert_every_listed_file_reads_without_a_call(rig, m)
    assert remaining(m) >= USERS_SHARE
    assert_no_429(rig)
