"""The README's recipes for monitoring, as written, on a Debian machine as shipped:
the Prometheus recipe with the real node_exporter (run as its own user, `prometheus`)
and its textfile collector, checked with promtool.

The recipe's files go where it says (/usr/local/bin, /etc/cron.d's line run as cron
would, /var/lib/prometheus/node-exporter), each laid over by a directory of the test in
the private namespace the desktop user works in: the machine's own are never written."""

import pwd
import re
import socket
import subprocess
import urllib.request

import pytest

from rig import ROOT, user_rig, user_system, wait_until  # noqa: F401

HOME_ID = "1001"
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"


def readme_block_after(marker, lang=""):
    """The fenced block of the README: the first ```@lang after @marker, or without
    @lang the one that holds @marker."""
    text = (ROOT / "README.md").read_text()
    at = text.index(marker)
    start = text.rindex("```", 0, at) if not lang else text.index(f"```{lang}\n", at)
    start = text.index("\n", start) + 1
    return text[start:text.index("```", start)]


@pytest.fixture
def desk(user_rig):
    """Two tado logins in one mount of all accounts, as the README mounts: the metrics
    have a sample an account under one HELP a metric."""
    user_rig.login_tado()
    user_rig.cloud.control.tado_login_as("second")
    user_rig.login_tado("tado:second")
    user_rig.write_accounts_config(["tado", "tado:second"])
    user_rig.sh("mkdir -p ~/home-data && smarthomefs mount ~/home-data")
    return user_rig


@pytest.fixture
def debian_dirs(desk, tmp_path):
    """/usr/local/bin and node_exporter's textfile directory, empty, with the owners
    and modes Debian ships (root's, 0755), laid over the real ones in the namespace."""
    ns = desk.system.ns
    over = {"/usr/local/bin": tmp_path / "local-bin", TEXTFILE_DIR: tmp_path / "textfile"}
    tmp_path.chmod(0o755)
    for target, path in over.items():
        path.mkdir(mode=0o755)
        r = ns.run("mount", "--bind", str(path), target)
        assert r.returncode == 0, r.stderr
    yield over
    for target in over:
        ns.run("umount", target)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return r.read().decode()
    except OSError:
        return None


def test_prometheus_recipe_feeds_node_exporters_textfile_collector(desk, debian_dirs):
    ns = desk.system.ns
    user = desk.user.name
    # Why the recipe takes two users: the directory is root's, and root may not read
    # the user's mount.
    shipped = subprocess.run(["stat", "-c", "%U %a", TEXTFILE_DIR], capture_output=True,
                             text=True).stdout
    assert shipped == "root 755\n"
    r = ns.run("cat", f"{desk.home}/home-data/.smarthomefs/metrics")
    assert r.returncode != 0 and "Permission denied" in r.stderr

    script = readme_block_after("**Prometheus with node_exporter", "sh")
    path = re.search(r"^# (/usr/local/bin/\S+) DIR", script, re.M)[1]
    (debian_dirs["/usr/local/bin"] / path.rsplit("/", 1)[1]).write_text(script)
    (debian_dirs["/usr/local/bin"] / path.rsplit("/", 1)[1]).chmod(0o755)
    cron = readme_block_after("# /etc/cron.d/home-data-metrics")
    [line] = [line for line in cron.splitlines() if line and not line.startswith("#")]
    fields = line.split(None, 6)
    assert fields[5] == "root"
    command = fields[6].replace("/home/me/", f"{desk.home}/").replace(" me ", f" {user} ")
    # As cron runs it: root, /bin/sh -c, cron's PATH.
    r = ns.run("sh", "-c", command, env={"PATH": "/usr/bin:/bin", "HOME": "/root",
                                         "SHELL": "/bin/sh", "LOGNAME": "root"})
    desk.outputs += [r.stdout, r.stderr]
    assert r.returncode == 0, r.stderr
    prom = debian_dirs[TEXTFILE_DIR] / "smarthomefs.prom"
    assert sorted(p.name for p in debian_dirs[TEXTFILE_DIR].iterdir()) == ["smarthomefs.prom"]
    r = subprocess.run(["promtool", "check", "metrics"], input=prom.read_text(),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    celsius = desk.read(desk.home / f"home-data/homes/{HOME_ID}/zones/1/values/"
                        "inside_temperature").strip()

    port = free_port()
    prometheus = pwd.getpwnam("prometheus")
    exporter = subprocess.Popen(
        [*ns.enter, "setpriv", f"--reuid={prometheus.pw_uid}", f"--regid={prometheus.pw_gid}",
         "--init-groups", "--", "prometheus-node-exporter",
         f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults",
         "--collector.textfile", f"--collector.textfile.directory={TEXTFILE_DIR}",
         "--web.disable-exporter-metrics"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        text = wait_until(lambda: scrape(port) or exporter.poll() is not None, 20,
                          "node_exporter to answer")
        assert exporter.poll() is None, exporter.stderr.read()
    finally:
        exporter.kill()
        exporter.wait(5)
    assert re.search(r"^node_textfile_scrape_error 0$", text, re.M), text
    assert f'tado_inside_temperature_celsius{{home="{HOME_ID}",zone="1"}} {celsius}\n' in text
    # smarthomefs's own metrics made it through as well, for each account.
    assert re.search(r'^smarthomefs_api_calls_total\{account="tado:second"\} ', text, re.M), text
    own = {m for m in re.findall(r"^# TYPE (\S+)", prom.read_text(), re.M)}
    assert own - {"tado_inside_temperature_celsius"}
    assert all(f"# TYPE {m} " in text for m in own)
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr


VALUE = f"homes/{HOME_ID}/zones/1/values/inside_temperature"


@pytest.fixture
def quick(user_rig):
    """The user logged in, mounted with ttl=1 and a quota the test cannot dent (else the
    TTL is stretched to spread tado's 100 calls a day)."""
    user_rig.cloud.control.config(quota=1_000_000)
    user_rig.login_tado()
    user_rig.write_config(extra=["ttl=1"])
    user_rig.sh("mkdir -p ~/home-data && smarthomefs mount tado ~/home-data")
    return user_rig


def test_a_value_file_gives_no_inotify_event_for_a_cloud_change_but_a_read_sees_it(quick,
                                                                                   tmp_path):
    """What the README says of tail -f and inotify: the kernel has no event for a change
    in the cloud; reading the file again (the README's loop) shows it."""
    path = quick.home / "home-data" / VALUE
    before = quick.read(path)
    out, err = tmp_path / "inotify.out", tmp_path / "inotify.err"
    with open(out, "wb") as o, open(err, "wb") as e:
        watcher = subprocess.Popen([*quick.prefix, "inotifywait", "-m", "-e", "modify",
                                    "-e", "attrib", "-e", "close_write", str(path)],
                                   env=quick.env, stdout=o, stderr=e)
    try:
        wait_until(lambda: "Watches established" in err.read_text(), 15,
                   "inotifywait's watch")
        assert quick.cloud.control.tado_zone_temperature(HOME_ID, 1, 26.5)
        wait_until(lambda: quick.read(path) == "26.5\n", 15, "the new value in the mount")
    finally:
        watcher.terminate()
        watcher.wait(5)
    assert before != "26.5\n"
    assert out.read_text() == ""
    loop = readme_block_after("while sleep")
    assert "cat ~/home-data/" in loop


def test_offline_read_of_something_never_cached_fails_with_eio(user_rig):
    """The man page's promise for -o offline without a disk copy."""
    user_rig.login_tado()
    user_rig.write_config()
    r = user_rig.sh("mkdir -p ~/home-data && smarthomefs mount tado ~/home-data -o offline",
                    check=False)
    assert r.returncode == 0, r.stderr
    r = user_rig.sh(f"cat ~/home-data/{VALUE}", check=False)
    assert r.returncode != 0
    assert "Input/output error" in r.stderr
    page = (ROOT / "docs/smarthomefs.1.scd").read_text()
    assert re.search(r"never fetched fail with \*EIO\*", page)
    assert user_rig.cloud.control.stats()["requests"].get(f"GET /api/v2/homes/{HOME_ID}/"
                                                          "zoneStates", 0) == 0
