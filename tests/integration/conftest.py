"""Fixtures of the integration suite: see rig.py."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import rig as rigmod  # noqa: E402
from rig import Keyring, Rig  # noqa: E402


@pytest.fixture(scope="session")
def keyring(tmp_path_factory):
    k = Keyring(tmp_path_factory.mktemp("keyring"))
    yield k
    k.stop()


@pytest.fixture
def cloud_options():
    """Options for the emulated cloud; a test overrides this fixture to change them."""
    return {}


@pytest.fixture
def cloud(tmp_path, cloud_options):
    c = rigmod.control.start_cloud(tmp_path / "cloud", **cloud_options)
    yield c
    c.stop()


@pytest.fixture
def rig(tmp_path, keyring, cloud):
    keyring.clear()
    with rigmod.checked(Rig(tmp_path, keyring, cloud)) as r:
        yield r
