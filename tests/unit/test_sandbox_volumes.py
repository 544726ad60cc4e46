"""The share and what the host mounts in it: real tmpfs and bind mounts under a scratch state
dir (needs root), and the guest's moves against them (renames, planted symlinks)."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from bulkhead.sandbox.mounts import mount_points_under
from bulkhead.sandbox.rootfs import mount_rootfs
from bulkhead.sandbox.share import Share, remove_container_dir, remove_state_dir
from bulkhead.sandbox.tree_removal import remove_tree
from bulkhead.sandbox.volumes import VolumeError, share
from bulkhead_wire.checks import check_id, parse_process_spec
from harness.mounts import mount_options

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root")


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[Path]:
    """A host tmpfs with a file: what a guest would aim its symlinks at."""
    path = tmp_path / "canary"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "canary", str(path)], check=True)
    (path / "precious").write_text("keep")
    try:
        yield path
    finally:
        assert (path / "precious").read_text() == "keep"
        subprocess.run(["umount", str(path)], check=True)


def test_dirs_and_files_are_bound_nosuid_nodev_and_rewritten(
        tmp_path: Path, sandbox_share: Share) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    single = tmp_path / "single.txt"
    single.write_text("s")
    cdir = sandbox_share.add_container("c1")
    host = Path(sandbox_share.path) / "c1"
    mounts = [{"destination": "/proc", "type": "proc", "source": "proc"},
              {"destination": "/data", "type": "bind", "source": str(src),
               "options": ["rbind", "rw"]},
              {"destination": "/etc/x", "type": "none", "source": str(single),
               "options": ["bind", "ro"]}]
    out = share(mounts, cdir.fd, "/run/bulkhead/shared/c1")
    assert out[0] == mounts[0]
    assert out[1]["source"] == "/run/bulkhead/shared/c1/volumes/1-src"
    assert out[1]["options"] == ["rbind", "rw"] and out[1]["type"] == "bind"
    assert (host / "volumes" / "1-src" / "a").read_text() == "a"
    ro = host / "volumes" / "2-single.txt"
    assert ro.read_text() == "s"
    with pytest.raises(OSError):
        ro.write_text("no")
    assert {"nosuid", "nodev"} <= mount_options(host / "volumes" / "1-src")
    assert {"nosuid", "nodev", "ro"} <= mount_options(ro)
    assert sandbox_share.remove_container("c1") == []
    assert not host.exists() and single.read_text() == "s" and (src / "a").read_text() == "a"
    assert not mount_points_under(host)


@pytest.mark.parametrize("options", [["rbind", "ro"], ["rbind", "rro"]])
def test_a_read_only_rbind_is_read_only_all_the_way_down(
        tmp_path: Path, sandbox_share: Share, canary: Path, options: list[str]) -> None:
    cdir = sandbox_share.add_container("c1")
    out = share([{"destination": "/d", "type": "bind", "source": str(tmp_path),
                  "options": options}], cdir.fd, "/g")
    assert out[0]["options"] == ["rbind", "ro"]  # the guest's one mount: ro is enough there
    nested = Path(sandbox_share.path) / "c1" / "volumes" / f"0-{tmp_path.name}" / "canary"
    assert (nested / "precious").read_text() == "keep"
    with pytest.raises(OSError) as exc:
        (nested / "new").write_text("x")
    assert exc.value.errno == errno.EROFS
    sandbox_share.remove_container("c1")
    assert canary in [Path(m.mount_point) for m in mount_points_under(canary)]


def test_what_cannot_be_shared_is_named(tmp_path: Path, sandbox_share: Share) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "app.sock"))
    try:
        for n, (source, why) in enumerate(((str(tmp_path / "app.sock"), "is a socket"),
                                           (str(tmp_path / "missing"), "does not exist"),
                                           ("relative/dir", "absolute host path"))):
            cdir = sandbox_share.add_container(f"c{n}")
            with pytest.raises(VolumeError, match=why) as exc:
                share([{"destination": "/d", "type": "bind", "source": source}], cdir.fd, "/g")
            assert source in str(exc.value)
    finally:
        sock.close()


def test_the_guest_cannot_move_a_container_dir_or_plant_a_link_in_its_place(
        sandbox_share: Share, canary: Path) -> None:
    sandbox_share.add_container("c1")
    root = Path(sandbox_share.path)
    with pytest.raises(OSError) as exc:  # what 9p does for a guest's rename: the host's rename
        os.rename(root / "c1", root / "moved")
    assert exc.value.errno == errno.EBUSY
    (root / "c2").symlink_to(canary)  # a name the host will use next
    with pytest.raises(OSError, match="c2 already exists"):
        sandbox_share.add_container("c2")
    assert remove_container_dir(sandbox_share.state_dir, "c2") == []  # the link, not its target
    assert not (root / "c2").is_symlink()


def test_links_planted_inside_a_container_dir_are_refused_not_followed(
        sandbox_share: Share, canary: Path, tmp_path: Path) -> None:
    cdir = sandbox_share.add_container("c1")
    host = Path(sandbox_share.path) / "c1"
    (host / "volumes").symlink_to(canary)
    src = tmp_path / "src"
    src.mkdir()
    with pytest.raises(VolumeError, match="volumes already exists"):
        share([{"destination": "/d", "type": "bind", "source": str(src)}], cdir.fd, "/g")
    assert sorted(os.listdir(canary)) == ["precious"]


def test_crash_only_cleanup_detaches_without_following_the_guests_links(
        tmp_path: Path, canary: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    sh = Share(str(state))
    sh.create()
    sh.add_container("c1")
    (Path(sh.path) / "c1" / "escape").symlink_to(canary)
    (Path(sh.path) / "junk").symlink_to(canary / "precious")
    for cdir in sh.containers.values():  # the shim died: its fds are gone
        os.close(cdir.fd)
    sh.containers.clear()
    os.close(sh.root_fd)
    assert remove_container_dir(str(state), "c1") == []
    assert remove_state_dir(str(state)) == []
    assert not state.exists() and not mount_points_under(state)
    assert canary in [Path(m.mount_point) for m in mount_points_under(canary)]


def test_tree_removal_never_crosses_a_mount(tmp_path: Path, canary: Path) -> None:
    top = tmp_path / "tree"
    (top / "a").mkdir(parents=True)
    (top / "a" / "f").write_text("x")
    (top / "link").symlink_to(canary)
    bound = top / "bound"
    bound.mkdir()
    subprocess.run(["mount", "--bind", str(canary), str(bound)], check=True)
    try:
        fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
        try:
            left = remove_tree(fd, "tree", str(tmp_path))
        finally:
            os.close(fd)
        assert left == [f"{top}/bound (another mount)"]
        assert sorted(os.listdir(top)) == ["bound"]
    finally:
        subprocess.run(["umount", str(bound)], check=True)


def test_a_read_only_root_is_read_only_on_the_host_with_its_mount_points(
        tmp_path: Path, sandbox_share: Share) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "link").symlink_to("/etc")  # resolved inside the root, never on the host
    cdir = sandbox_share.add_container("c1")
    points = [("/data", False), ("/link/hosts", True)]
    mount_rootfs([], cdir.fd, str(root), True, points, str(tmp_path / "staging"))
    rootfs = Path(sandbox_share.path) / "c1" / "rootfs"
    assert (root / "data").is_dir() and (root / "etc" / "hosts").is_file()
    assert {"ro", "nosuid", "nodev"} <= mount_options(rootfs)
    with pytest.raises(OSError):
        (rootfs / "new").write_text("x")


@pytest.mark.parametrize("value", ["", ".", "..", "a/b", "../x", "x\n", "a" * 256])
def test_bad_ids_are_refused(value: str) -> None:
    with pytest.raises(ValueError, match="invalid exec id"):
        check_id("exec", value)


@pytest.mark.parametrize("raw,why", [
    (b"{", "not valid JSON"), (b"[]", "JSON object"), (b'{"args": []}', "non-empty list"),
    (b'{"args": ["sh", 3]}', "list of strings"), (b'{"args": ["sh"], "cwd": 1}', "cwd"),
    (b'{"args": ["sh"], "env": "A=1"}', "env"), (b'{"args": ["' + b"x" * (1 << 20) + b'"]}',
                                                 "exceeds"),
])
def test_bad_process_specs_are_refused(raw: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_process_spec(raw, "exec e1")


def test_a_read_only_overlay_root_gets_its_mount_points_through_a_private_mount(
        tmp_path: Path, sandbox_share: Share) -> None:
    from bulkhead_wire.proto import mount_pb2

    lower, upper, work = (tmp_path / n for n in ("lower", "upper", "work"))
    for d in (lower, upper, work):
        d.mkdir()
    (lower / "bin").mkdir()
    snapshot = mount_pb2.Mount(type="overlay", source="overlay", options=[
        f"lowerdir={lower}", f"upperdir={upper}", f"workdir={work}"])
    cdir = sandbox_share.add_container("c1")
    staging = tmp_path / "staging"
    mount_rootfs([snapshot], cdir.fd, "", True, [("/data", False)], str(staging))
    rootfs = Path(sandbox_share.path) / "c1" / "rootfs"
    assert (upper / "data").is_dir() and (rootfs / "bin").is_dir()
    assert not staging.exists() and not mount_points_under(staging)
    assert {"ro", "nosuid", "nodev"} <= mount_options(rootfs)
