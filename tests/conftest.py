"""Shared fixtures: private containerd 1.6 / 1.7 / 2.1 instances (one per session each), the
demo image imported into them, a per-test leak check, and the session's check that the host is
left as it was found. CRI-enabled instances and the `cri` fixture come from the cri.fixtures
plugin."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from harness.containerd import PrivateContainerd
from host_state import HostState, changes
from leaks import LeakBaseline, assert_no_leaks
from session_instances import (
    DEMO_IMAGE,
    EACH_VERSION,
    image_tar,
    of_this_version,
    session_instance,
)

# grpcio (the CRI client) installs fork handlers that restart its event engine in a forked
# child, which aborts there ("epoll_wait error: Bad file descriptor") before the child can exec;
# tests fork QEMU from this process, so those handlers stay off (read when grpc first loads).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

pytest_plugins = ("cri.fixtures",)


@pytest.fixture(scope="session", autouse=True)
def host_left_as_found() -> Iterator[None]:
    """Errors the run (at the last teardown) if the suite changed the host's watched paths,
    mounts, links, iptables rules or processes (tests/host_state.py), naming each change."""
    before = HostState.read()
    yield
    diff = changes(before, HostState.read())
    if diff:
        shown = "\n".join(diff[:200]) + (f"\n... and {len(diff) - 200} more" if len(diff) > 200
                                           else "")
        raise AssertionError(f"the suite left the host changed ({len(diff)}):\n{shown}")


@pytest.fixture(scope="session")
def containerd16() -> Iterator[PrivateContainerd]:
    with session_instance("1.6") as instance:
        yield instance


@pytest.fixture(scope="session")
def containerd17() -> Iterator[PrivateContainerd]:
    with session_instance("1.7") as instance:
        yield instance


@pytest.fixture(scope="session")
def containerd21() -> Iterator[PrivateContainerd]:
    with session_instance("2.1") as instance:
        yield instance


@pytest.fixture(**EACH_VERSION)
def containerd(request: pytest.FixtureRequest) -> PrivateContainerd:
    """Runs the test once against each containerd version (a module narrows the versions with
    `pytest.mark.parametrize("containerd", [...], indirect=True)`)."""
    instance: PrivateContainerd = of_this_version(request, "containerd")
    return instance


@pytest.fixture(scope="session")
def demo_image_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The installed demo archive, or one built on the fly from the repo's builder."""
    return image_tar(tmp_path_factory, "demo")


@pytest.fixture(scope="session")
def _imported_into() -> set[str]:
    return set()


@pytest.fixture
def demo_image(
    containerd: PrivateContainerd, demo_image_tar: Path, _imported_into: set[str]
) -> str:
    """The demo image's name, imported (and unpacked) into this instance once per session."""
    if containerd.name not in _imported_into:
        containerd.import_image(demo_image_tar)
        _imported_into.add(containerd.name)
    return DEMO_IMAGE


@pytest.fixture
def debug_config(tmp_path: Path) -> tuple[str, ...]:
    """ctr options giving a container's VM the debug shell (`bulkhead shell`)."""
    path = tmp_path / "debug.toml"
    path.write_text("debug_shell = true\n")
    return ("--runtime-config-path", str(path))


@pytest.fixture
def no_leaks(containerd: PrivateContainerd) -> Generator[None, None, None]:
    """Fails the test (at teardown) if it left processes, sockets, mounts or state behind."""
    baseline = LeakBaseline.capture()
    yield
    assert_no_leaks(containerd, baseline)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the containerd log tail to failures of tests that used an instance."""
    report = yield
    funcargs = getattr(item, "funcargs", {})
    instance = funcargs.get("containerd")
    env = funcargs.get("cri") or funcargs.get("cri_17")
    if instance is None and env is not None:
        instance = getattr(env, "instance", None)
    if report.failed and isinstance(instance, PrivateContainerd):
        report.sections.append((f"containerd {instance.version} log tail", instance.log_tail(60)))
    return report
