"""HTTP/2 where the server offers it (issue 5): the Tibber API served over TLS by a real
HTTP/2 server (hypercorn, tests/integration/h2_server.py) is read over HTTP/2, and the
emulated cloud, which offers only HTTP/1.1, is still read over HTTP/1.1. What a user sees:
the same bytes in the mount, and `debug`'s request lines saying which version was used."""

import importlib.util
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from rig import read, stored_tokens, wait_until

HOME = "92b82b1f-0196-56ab-bd6e-3588c700d94b"
CHARGER = "ZWFzZWUgZW5vZGUgY2hhcmdlcjoxMDA"
SERVER = Path(__file__).parent / "h2_server.py"
# A request line of the daemon's debug log: method, path, status, version.
REQUEST_LINE = re.compile(r"(GET \S+) -> 200 in \d+\.\d+ s over (HTTP/[\d.?]+)")
# A line of the server's access log: "[time] [pid] [INFO] GET /v1/homes 2 200".
ACCESS_LINE = re.compile(r"\] (\S+) (\S+) ([\d.]+) (\d+)$", re.M)


class H2Server:
    """h2_server.py on a socket of ours on 127.0.0.1, with the test CA's server cert."""

    def __init__(self, base: Path, certdir: Path, cafile):
        self.docroot = base / "docroot"
        self.docroot.mkdir(parents=True)
        self.access_log = base / "h2-access.log"
        self.access_log.touch()
        self.output = open(base / "h2-server.log", "wb")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"https://127.0.0.1:{self.sock.getsockname()[1]}"
        fd = self.sock.fileno()
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER), str(self.docroot), str(certdir / "server.pem"),
             str(certdir / "server.key"), str(fd), str(self.access_log)],
            pass_fds=(fd,), stdin=subprocess.DEVNULL, stdout=self.output,
            stderr=self.output)
        self.context = ssl.create_default_context(cafile=cafile)
        wait_until(lambda: self._answers() or self.proc.poll() is not None, 20,
                   "the HTTP/2 server to answer")
        if self.proc.poll() is not None:
            raise AssertionError(f"h2_server.py exited: {self.log()}")

    def _answers(self):
        # The socket listens already: this waits for the server to take the connection.
        try:
            urllib.request.urlopen(f"{self.url}/ready", context=self.context, timeout=2)
        except urllib.error.HTTPError:
            return True  # 404: it answers
        except OSError:
            return False
        return True

    def put(self, path, body: bytes):
        """Serves @body at @path (/v1/...)."""
        file = self.docroot / (path.lstrip("/") + ".json")
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(body)

    def requests(self):
        """("METHOD PATH", "HTTP/<version>", "STATUS") of every request it answered."""
        return [(f"{m[1]} {m[2]}", f"HTTP/{m[3]}", m[4]) for m in
                ACCESS_LINE.finditer(self.access_log.read_text())]

    def log(self):
        return (self.access_log.parent / "h2-server.log").read_text(errors="replace")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.output.close()
        self.sock.close()


@pytest.fixture
def h2_server(tmp_path, cloud):
    if importlib.util.find_spec("hypercorn") is None:
        pytest.fail("the HTTP/2 server of this test needs python3-hypercorn: "
                    "./scripts/setup installs it")
    server = H2Server(tmp_path / "h2", Path(cloud.certdir), cloud.cafile)
    yield server
    server.stop()


def copy_api(rig, server):
    """Writes into the server's docroot what the emulator answers for the homes, their
    device lists and each device's detail: the server then holds the same API."""
    token = stored_tokens(rig, "tibber")["access_token"]

    def get(path):
        reply = rig.cloud.control.request("GET", path,
                                          headers={"Authorization": f"Bearer {token}",
                                                   "User-Agent": "test_http2/1"})
        assert reply.status == 200, (path, reply.status)
        server.put(path, reply.body)
        return json.loads(reply.body)

    for home in get("/v1/homes")["homes"]:
        for device in get(f"/v1/homes/{home['id']}/devices")["devices"]:
            get(f"/v1/homes/{home['id']}/devices/{device['id']}")


def what_a_user_reads(m):
    """ls of the homes and of a home's devices, and cat of a few files."""
    device = m / "homes" / HOME / "devices" / CHARGER
    return {
        "homes": sorted(os.listdir(m / "homes")),
        "devices": sorted(os.listdir(m / "homes" / HOME / "devices")),
        "home.json": read(m / "homes" / HOME / "home.json"),
        "device.json": read(device / "device.json"),
        "charging.status": read(device / "values" / "charging.status"),
    }


def request_versions(log_path):
    """{"GET /path": {versions}} of the daemon's debug request lines."""
    seen = {}
    for request, version in REQUEST_LINE.findall(Path(log_path).read_text(errors="replace")):
        seen.setdefault(request, set()).add(version)
    return seen


def test_a_server_that_offers_http2_is_read_over_http2_and_the_cloud_over_http1(
        rig, h2_server, tmp_path):
    rig.login_tibber()
    copy_api(rig, h2_server)
    direct = rig.mount("tibber", name="direct",
                       extra=["debug", f"cache_dir={tmp_path / 'cache-direct'}"])
    over_h2 = rig.mount("tibber", name="over-h2",
                        extra=["debug", f"cache_dir={tmp_path / 'cache-h2'}",
                               f"api_url={h2_server.url}/v1"])

    expected = what_a_user_reads(direct)
    seen = what_a_user_reads(over_h2)

    assert seen == expected
    assert HOME in seen["homes"] and CHARGER in seen["devices"]
    assert seen["charging.status"] == b"idle\n"
    wanted = {"GET /homes", f"GET /homes/{HOME}/devices",
              f"GET /homes/{HOME}/devices/{CHARGER}"}
    over_h2_versions = request_versions(over_h2.log_path)
    assert wanted <= over_h2_versions.keys(), over_h2_versions
    assert set().union(*over_h2_versions.values()) == {"HTTP/2"}, over_h2_versions
    direct_versions = request_versions(direct.log_path)
    assert wanted <= direct_versions.keys(), direct_versions
    assert set().union(*direct_versions.values()) == {"HTTP/1.1"}, direct_versions
    # The server's side of it: those requests came to it as HTTP/2 streams.
    wanted_there = {(r.replace(" ", " /v1", 1), "HTTP/2", "200") for r in wanted}
    wait_until(lambda: wanted_there <= set(h2_server.requests()), 10,
               "the server to log those requests as HTTP/2 streams")
