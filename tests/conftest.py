"""Test configuration: the KVM devices that `kvm`-marked tests run against.

    pytest --device /dev/kvm --device /dev/kvmport

Without --device: $PYHOST_TEST_DEVICES (comma-separated), else /dev/kvm.  A
device that cannot be opened fails its tests; it is never skipped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from bintest.build import build, mode_of, symbols
from pyhost import Cap, Kvm
from pyhost.errors import PyhostError
from pyhost.raw import RawGuest, load_raw


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", action="append", default=None,
                     help="KVM device for kvm-marked tests (repeatable; default "
                          "$PYHOST_TEST_DEVICES or /dev/kvm)")


def _devices(config: pytest.Config) -> list[str]:
    given = config.getoption("--device")
    if given:
        return list(given)
    env = os.environ.get("PYHOST_TEST_DEVICES")
    return [d for d in env.split(",") if d] if env else ["/dev/kvm"]


def _run_areas(device: str) -> list[str]:
    """mmap always; KVM_MMAP_VCPU too where the device advertises it."""
    try:
        with Kvm(device) as kvm:
            return ["mmap", "ioctl"] if kvm.check_extension(Cap.MMAP_VCPU) else ["mmap"]
    except PyhostError:
        return ["mmap"]  # the test itself reports why the device is unusable


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "device" not in metafunc.fixturenames:
        return
    devices = _devices(metafunc.config)
    if "run_area" in metafunc.fixturenames:
        combos = [(d, a) for d in devices for a in _run_areas(d)]
        metafunc.parametrize(("device", "run_area"), combos,
                             ids=[f"{d}-{a}" for d, a in combos])
    else:
        metafunc.parametrize("device", devices)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "device" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kvm)
        if "tests/lab/" in str(item.fspath).replace(os.sep, "/") or item.get_closest_marker("lab"):
            item.add_marker(pytest.mark.lab)


@pytest.fixture
def kvm(device: str) -> Iterator[Kvm]:
    with Kvm(device) as k:
        yield k


GuestFactory = Callable[..., RawGuest]


@pytest.fixture
def raw_guest(kvm: Kvm, run_area: str) -> Iterator[GuestFactory]:
    """raw_guest("name", **load_raw options): a bintest guest loaded in its own mode,
    its run area mapped each way the device offers (run_area)."""
    made: list[RawGuest] = []

    def make(name: str, **kw: object) -> RawGuest:
        kw.setdefault("run_area", run_area)
        guest = load_raw(kvm, build(name).read_bytes(), mode_of(name), **kw)  # type: ignore[arg-type]
        made.append(guest)
        return guest

    yield make
    for g in made:
        g.close()


@pytest.fixture
def guest_symbols() -> Callable[[str], dict[str, int]]:
    return symbols

