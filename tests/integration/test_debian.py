"""The Debian package (debian/): dpkg-buildpackage builds it from a copy of the tree in a
temporary directory, lintian finds neither an error nor a warning in it, and once apt
has installed it on this machine the installed /usr/sbin/mount.smarthomefs mounts the
emulated tado and Tibber clouds, by mount(8) and directly. The package is purged at the
end, also when a test failed; a smarthomefs package that was installed before the run is
left alone (the tests that need the installed package are skipped then).

The tests named test_installed_* are also the package's autopkgtest (debian/tests/
control runs them with SMARTHOMEFS_DEB_INSTALLED=1: the package is installed already,
nothing is built or installed here); scripts/autopkgtest runs that here."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import rig as rigmod
from rig import ROOT, wait_until

PACKAGE = "smarthomefs"
TADO_HOME = "1001"
ACCOUNT = "tado:second"  # one the rig's keyring.clear() removes after each test
TIBBER_HOME = "92b82b1f-0196-56ab-bd6e-3588c700d94b"
CHARGER = "ZWFzZWUgZW5vZGUgY2hhcmdlcjoxMDA"
INSIDE_AUTOPKGTEST = os.environ.get("SMARTHOMEFS_DEB_INSTALLED") == "1"
# apt waits this long for another apt or dpkg (an unattended upgrade) to finish.
APT = ["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=300"]


def sanitized_bin():
    """Whether SMARTHOMEFS_BIN is from a build with a sanitizer (meson's record of it)."""
    try:
        options = json.loads((rigmod.BIN.parent / "meson-info/intro-buildoptions.json")
                             .read_text())
    except (OSError, ValueError):
        return False
    return any(o["name"] == "sanitize" and o["value"] not in (False, "none") for o in options)


# scripts/test runs this suite again against sanitized builds of the program. Nothing here
# runs SMARTHOMEFS_BIN: the package is built from the tree and tested as installed, which
# the plain pass has done already.
if sanitized_bin() and not INSIDE_AUTOPKGTEST:
    pytest.skip("the Debian package is built and tested in the pass without a sanitizer",
                allow_module_level=True)


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=kw.pop("timeout", 600),
                          **kw)


def meson_version():
    return re.search(r"version\s*:\s*'([^']+)'", (ROOT / "meson.build").read_text()).group(1)


def package_state():
    """dpkg's two-letter state of the package ("ii" installed, "" unknown to dpkg)."""
    r = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", PACKAGE])
    return r.stdout.strip() if r.returncode == 0 else ""


def copy_tree(dest: Path):
    """The source tree as a clean clone has it, plus uncommitted files: git's files, no
    build directories."""
    r = run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
             "--exclude-standard"])
    assert r.returncode == 0, r.stderr
    for name in filter(None, r.stdout.split("\0")):
        src = ROOT / name
        if src.is_file() or src.is_symlink():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name, follow_symlinks=False)


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """dpkg-buildpackage -us -uc -b of a copy of the tree; -> the directory holding the
    .deb and the .changes. The unit tests are skipped here (nocheck): they run in
    scripts/test; a build without nocheck runs them."""
    if INSIDE_AUTOPKGTEST:
        pytest.skip("the autopkgtest tests the installed package; it builds nothing")
    out = tmp_path_factory.mktemp("deb")
    src = out / "src"
    copy_tree(src)
    env = dict(os.environ, DEB_BUILD_OPTIONS="nocheck parallel=2")
    r = run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, env=env)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-6000:]
    shutil.rmtree(src)  # the objects; the packages are beside it
    return out


def deb(package_dir):
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    return package_dir / f"{PACKAGE}_{meson_version()}_{arch}.deb"


@pytest.fixture(scope="module")
def installed(request):
    """The package installed with apt from the built .deb, as the README says, and purged
    afterwards whatever happened; inside the autopkgtest, the package as installed."""
    if INSIDE_AUTOPKGTEST:
        assert package_state() == "ii", "the autopkgtest runs with the package installed"
        yield
        return
    if os.geteuid() != 0:
        pytest.skip("installing a package on this machine needs root (CI runs as root)")
    before = package_state()
    if before not in ("", "un", "pn"):
        pytest.skip(f"{PACKAGE} is installed from elsewhere (dpkg state {before}); "
                    "these tests install their own build only on a machine without it")
    built = deb(request.getfixturevalue("package"))
    try:
        r = run([*APT, "install", "--no-install-recommends", str(built)])
        assert r.returncode == 0, r.stdout + r.stderr
        assert package_state() == "ii"
        yield
    finally:
        if package_state() not in ("", "un", "pn"):
            r = run([*APT, "purge", PACKAGE])
            assert r.returncode == 0, r.stdout + r.stderr
        assert package_state() in ("", "un", "pn"), f"{PACKAGE} is still installed"


@pytest.fixture
def installed_rig(rig, installed, monkeypatch):
    """The rig with the installed /usr/bin/smarthomefs in place of the build's."""
    monkeypatch.setattr(rigmod, "BIN", Path("/usr/bin/smarthomefs"))
    return rig


# --- the package ---------------------------------------------------------------------


def test_changelog_and_copyright_agree_with_meson_build_and_license():
    r = run(["dpkg-parsechangelog", "-l", str(ROOT / "debian/changelog"), "-S", "Version"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == meson_version()
    # debian/copyright's license paragraph is LICENSE's text, its holder LICENSE's.
    copyright = (ROOT / "debian/copyright").read_text()
    license = (ROOT / "LICENSE").read_text()
    holder = re.search(r"^Copyright \(c\) (.+)$", license, re.M).group(1)
    assert f"\nCopyright: {holder}\n" in copyright
    paragraph = copyright.split("\nLicense: Expat\n")[-1]
    text = "".join("" if l.strip() == "." else l[1:] for l in paragraph.splitlines(keepends=True))
    assert text.split() == license[license.index("Permission"):].split()


def test_package_is_lintian_clean_with_the_files_and_depends_it_promises(package):
    changes = package / f"{deb(package).stem}.changes"
    r = run(["lintian", "--fail-on", "error,warning", str(changes)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert not re.search(r"^[EW]: ", r.stdout, re.M), r.stdout

    contents = run(["dpkg-deb", "-c", str(deb(package))]).stdout
    for path in ("./usr/bin/smarthomefs", "./usr/sbin/mount.smarthomefs -> ../bin/smarthomefs",
                 "./usr/share/man/man1/smarthomefs.1.gz",
                 "./usr/share/man/man8/mount.smarthomefs.8.gz",
                 "./usr/lib/systemd/user/smarthomefs@.service",
                 "./usr/lib/systemd/user/smarthomefs.service",
                 "./usr/share/bash-completion/completions/smarthomefs",
                 "./usr/share/doc/smarthomefs/copyright"):
        assert re.search(rf" {re.escape(path)}$", contents, re.M), f"{path} not in:\n{contents}"
    depends = run(["dpkg-deb", "-f", str(deb(package)), "Depends"]).stdout
    assert "fuse3" in [d.split()[0] for d in depends.split(", ")], depends
    # No maintainer script enables a unit for every user: the template has one instance
    # an account, and the unit of all accounts is each user's to enable.
    assert "postinst" not in run(["dpkg-deb", "--info", str(deb(package))]).stdout


# --- the installed package (also the autopkgtest) -------------------------------------


def daemons(mountpoint):
    """{pid: program} of the smarthomefs processes whose arguments name @mountpoint."""
    found = {}
    for p in Path("/proc").iterdir():
        try:
            exe = os.readlink(p / "exe")
            argv = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if os.path.basename(exe) == "smarthomefs" and str(mountpoint).encode() in argv:
            found[int(p.name)] = exe
    return found


def unmount(mountpoint):
    if mountpoint.is_mount():
        if run(["umount", str(mountpoint)]).returncode != 0:
            run(["umount", "-l", str(mountpoint)])
    wait_until(lambda: not daemons(mountpoint), 15, "the daemon to exit after the unmount")


def test_installed_files_belong_to_the_package(installed):
    r = run(["dpkg", "-S", "/usr/sbin/mount.smarthomefs", "/usr/bin/smarthomefs"])
    assert r.returncode == 0 and r.stdout.count(f"{PACKAGE}: ") == 2, r.stdout + r.stderr
    # mount(8) runs /sbin/mount.TYPE: the link reaches the installed program.
    assert os.path.realpath("/sbin/mount.smarthomefs") == "/usr/bin/smarthomefs"
    r = run(["/usr/sbin/mount.smarthomefs", "--version"])
    assert r.stdout.strip() == f"smarthomefs {meson_version()}"


def test_installed_helper_mounts_tado_through_mount8(installed_rig):
    rig = installed_rig
    rig.cloud.control.tado_zone_temperature(TADO_HOME, 1, 19.7)
    # An account of a name of its own: `status` reads every mount of the account by
    # this user (root), and other runs on the machine mount "tado" as root too.
    rig.login_tado(ACCOUNT)
    mnt = rig.tmp / "home-data"
    mnt.mkdir()
    try:
        r = run(["mount", "-t", "smarthomefs", "-o", ",".join(rig.options()), ACCOUNT,
                 str(mnt)], env=rig.env, timeout=60)
        rig.outputs += [r.stdout, r.stderr]
        assert r.returncode == 0, r.stderr
        r = run(["findmnt", "-n", "-o", "SOURCE,FSTYPE", str(mnt)])
        assert r.stdout.split() == [ACCOUNT, "fuse.smarthomefs"]
        # The daemon mount(8) started is the installed program.
        assert list(daemons(mnt).values()) == ["/usr/bin/smarthomefs"]
        home = json.loads((mnt / f"homes/{TADO_HOME}/home.json").read_text())
        assert str(home["id"]) == TADO_HOME
        values = mnt / f"homes/{TADO_HOME}/zones/1/values"
        assert (values / "inside_temperature").read_text() == "19.7\n"
        status = rig.run("status", ACCOUNT)
        assert f"mounted at:    {mnt}" in status.stdout
    finally:
        unmount(mnt)
    assert not mnt.is_mount()


def test_installed_helper_mounts_tibber_when_run_itself(installed_rig):
    rig = installed_rig
    rig.cloud.control.tibber_capability(CHARGER, "charging.status", "charging")
    rig.login_tibber()
    mnt = rig.tmp / "home-data"
    mnt.mkdir()
    try:
        r = run(["/usr/sbin/mount.smarthomefs", "tibber", str(mnt), "-o",
                 ",".join(rig.options("tibber"))], env=rig.env, timeout=60)
        rig.outputs += [r.stdout, r.stderr]
        assert r.returncode == 0, r.stderr
        assert mnt.is_mount()
        device = mnt / f"homes/{TIBBER_HOME}/devices/{CHARGER}"
        assert (device / "values/charging.status").read_text() == "charging\n"
        assert json.loads((device / "device.json").read_text())["id"] == CHARGER
    finally:
        unmount(mnt)


def test_installed_helper_mounts_every_login_in_one_tree(installed_rig):
    """The issue's promise: logged in to two accounts, `mount.smarthomefs ~/home-data`
    shows both, each account's options from its section of the config file."""
    rig = installed_rig
    rig.login_tado(ACCOUNT)
    rig.login_tibber()
    rig.write_accounts_config([ACCOUNT, "tibber"])
    mnt = rig.tmp / "home-data"
    mnt.mkdir()
    try:
        r = run(["/usr/sbin/mount.smarthomefs", str(mnt)], env=rig.env, timeout=60)
        rig.outputs += [r.stdout, r.stderr]
        assert r.returncode == 0, r.stderr
        r = run(["findmnt", "-n", "-o", "SOURCE,FSTYPE", str(mnt)])
        assert r.stdout.split() == ["all", "fuse.smarthomefs"]
        assert list(daemons(mnt).values()) == ["/usr/bin/smarthomefs"]
        assert {TADO_HOME, TIBBER_HOME} <= set(os.listdir(mnt / "homes"))
        device = json.loads((mnt / f"homes/{TIBBER_HOME}/devices/{CHARGER}/device.json")
                            .read_text())
        assert device["id"] == CHARGER
        assert (mnt / f"homes/{TADO_HOME}/zones/1/values/inside_temperature").read_text()
        status = json.loads((mnt / ".smarthomefs/status.json").read_text())
        assert sorted(status["accounts"]) == sorted([ACCOUNT, "tibber"])
    finally:
        unmount(mnt)
    assert not mnt.is_mount()


def test_autopkgtest_passes_against_the_installed_package(installed):
    if INSIDE_AUTOPKGTEST:
        pytest.skip("this is the autopkgtest")
    r = run([str(ROOT / "scripts/autopkgtest")], timeout=900)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-6000:]
    assert re.search(r"^mount-emulated-cloud\s+PASS", r.stdout, re.M), r.stdout[-3000:]
