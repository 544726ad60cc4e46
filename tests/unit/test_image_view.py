"""The image view the guest caches: only a writable overlay snapshot that is still empty gets
one, and it holds the image layers alone, read-only (real mounts under a scratch share: root)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from bulkhead.sandbox.image_view import VIEW_PREFIX, layered_snapshot, view_name
from bulkhead.sandbox.rootfs import mount_rootfs
from bulkhead.sandbox.share import Share
from bulkhead_wire.proto import mount_pb2
from harness.mounts import mount_options

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root")


def snapshot(tmp_path: Path, layers: int) -> tuple[mount_pb2.Mount, list[Path], Path]:
    """containerd's overlay mount of `layers` image layers under an empty upper dir."""
    tmp_path.mkdir(exist_ok=True)
    lowers = [tmp_path / f"l{i}" for i in range(layers)]
    upper, work = tmp_path / "upper", tmp_path / "work"
    for i, d in enumerate(lowers):
        d.mkdir()
        (d / f"from-{i}").write_text(f"layer {i}\n")
    upper.mkdir()
    work.mkdir()
    m = mount_pb2.Mount(type="overlay", source="overlay", options=[
        "index=off", f"workdir={work}", f"upperdir={upper}",
        "lowerdir=" + ":".join(map(str, lowers))])
    return m, lowers, upper


@pytest.mark.parametrize("layers", [1, 3])
def test_view_holds_the_image_layers_read_only(tmp_path: Path, sandbox_share: Share,
                                               layers: int) -> None:
    m, _, upper = snapshot(tmp_path, layers)
    cdir = sandbox_share.add_container("c1")
    layered = mount_rootfs([m], cdir.fd, "", False, layered=True)
    assert layered is not None
    name = sandbox_share.image_view(layered, str(tmp_path / "empty"))
    assert name.startswith(VIEW_PREFIX)
    view = Path(sandbox_share.path) / name
    assert sorted(os.listdir(view)) == sorted(f"from-{i}" for i in range(layers))
    with pytest.raises(OSError) as exc:
        (view / "new").write_text("x")
    assert exc.value.errno == errno.EROFS
    assert {"ro", "nosuid", "nodev"} <= mount_options(view)
    # The rootfs beside it is containerd's writable snapshot, as without the view.
    (Path(sandbox_share.path) / "c1" / "rootfs" / "written").write_text("w\n")
    assert (upper / "written").exists() and not (view / "written").exists()
    assert mount_rootfs([m], sandbox_share.add_container("c2").fd, "", False,
                        layered=True) is None  # the upper holds something now


def test_one_view_per_image_kept_for_the_sandbox(tmp_path: Path, sandbox_share: Share) -> None:
    """Containers of one image share a view (and the guest's cache of it); it outlives them,
    so its device number is never freed for another view while the guest may cache it."""
    empty = str(tmp_path / "empty")
    a, _, _ = snapshot(tmp_path / "a", 1)
    b, _, _ = snapshot(tmp_path / "b", 2)
    snap_a = mount_rootfs([a], sandbox_share.add_container("c1").fd, "", False, layered=True)
    assert snap_a is not None
    first = sandbox_share.image_view(snap_a, empty)
    sandbox_share.remove_container("c1")
    assert sandbox_share.image_view(snap_a, empty) == first
    share = Path(sandbox_share.path)
    assert (share / first / "from-0").is_file()  # still mounted
    snap_b = mount_rootfs([b], sandbox_share.add_container("c2").fd, "", False, layered=True)
    assert snap_b is not None
    other = sandbox_share.image_view(snap_b, empty)
    assert other != first
    assert os.stat(share / first).st_dev != os.stat(share / other).st_dev
    assert os.listdir(empty) == []


def test_a_view_name_the_guest_took_first_is_refused(tmp_path: Path,
                                                    sandbox_share: Share) -> None:
    m, _, _ = snapshot(tmp_path, 2)
    layered = mount_rootfs([m], sandbox_share.add_container("c1").fd, "", False, layered=True)
    assert layered is not None
    (Path(sandbox_share.path) / view_name(layered)).mkdir()  # as the guest could, over 9p
    with pytest.raises(FileExistsError):
        sandbox_share.image_view(layered, str(tmp_path / "empty"))


def test_no_view_unless_asked_writable_and_overlay(tmp_path: Path) -> None:
    m, _, upper = snapshot(tmp_path, 2)
    assert layered_snapshot(m) is not None
    assert layered_snapshot(mount_pb2.Mount(type="bind", source=str(upper),
                                            options=["rbind"])) is None
    ro = mount_pb2.Mount(type="overlay", source="overlay", options=[*m.options, "ro"])
    assert layered_snapshot(ro) is None
    no_upper = mount_pb2.Mount(type="overlay", source="overlay",
                               options=[o for o in m.options if not o.startswith("upperdir=")])
    assert layered_snapshot(no_upper) is None
