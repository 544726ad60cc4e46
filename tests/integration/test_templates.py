"""VM templates through real containerd: clones share one template, concurrent starts build one,
broken or stale templates fall back to a cold boot and are replaced, clones do not share their
randomness or their clock, and containers behave the same in both boot modes."""

from __future__ import annotations

import json
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from ctrtools import detached, exec_, run
from harness.containerd import PrivateContainerd

pytestmark = [pytest.mark.containerd, pytest.mark.vm]
TEMPLATES = Path("/run/bulkhead/templates")


def only_on(containerd: PrivateContainerd, *versions: str) -> None:
    if containerd.version not in versions:
        pytest.skip(f"covered on containerd {', '.join(versions)}")


def templates() -> list[str]:
    """Digests of the complete templates on disk."""
    if not TEMPLATES.is_dir():
        return []
    return sorted(p.name for p in TEMPLATES.iterdir()
                  if p.is_dir() and not p.name.startswith("."))


def log_since(ctd: PrivateContainerd, mark: int) -> str:
    """containerd's log (with our shims' lines) written after mark = len(log_text())."""
    return ctd.log_text()[mark:]


def config_file(tmp_path: Path, **settings: object) -> Path:
    path = tmp_path / "bulkhead.toml"
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
    return path


def test_clones_share_one_template(containerd: PrivateContainerd, demo_image: str,
                                   no_leaks: None) -> None:
    only_on(containerd, "1.7", "2.1")
    mark = len(containerd.log_text())
    with detached(containerd, demo_image, "sleep", "600") as a, \
            detached(containerd, demo_image, "sleep", "600") as b:
        found = templates()
        assert len(found) == 1, found
        log = log_since(containerd, mark)
        for cid in (a, b):
            assert re.search(rf"sandbox {cid}: VM pid \d+ up \(cloned from a template", log), log
        # Clones are not the same machine: fresh randomness, their own hostname.
        seen = [exec_(containerd, cid, "sh", "-c",
                      "head -c 16 /dev/urandom | od -An -tx1; "
                      "cat /proc/sys/kernel/random/uuid").stdout for cid in (a, b)]
        assert seen[0] and seen[0] != seen[1], seen
        for cid in (a, b):
            res = exec_(containerd, cid, "date", "+%s")
            assert abs(int(res.stdout) - time.time()) <= 1.5, (cid, res.stdout, res.stderr)


def test_guest_clock_is_the_hosts_after_restoring_an_old_template(
        containerd: PrivateContainerd, demo_image: str, no_leaks: None) -> None:
    only_on(containerd, "1.7")
    run(containerd, demo_image, "true")  # makes sure the template exists
    (digest,) = templates()
    age = time.time() - json.loads((TEMPLATES / digest / "manifest.json").read_text())["created"]
    if age < 20:
        time.sleep(20 - age)  # without the clock step the guest would be this far behind
    code, out, err = run(containerd, demo_image, "date", "+%s")
    assert code == 0, err
    assert abs(int(out) - time.time()) <= 1.5, out


def test_concurrent_starts_build_one_template(containerd: PrivateContainerd, demo_image: str,
                                              no_leaks: None) -> None:
    only_on(containerd, "1.7")
    for digest in templates():
        shutil.rmtree(TEMPLATES / digest)
    mark = len(containerd.log_text())
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda i: run(containerd, demo_image, "echo", f"hi-{i}",
                                              timeout=300), range(10)))
    assert [(code, out) for code, out, _ in results] == [(0, f"hi-{i}\n") for i in range(10)]
    assert len(templates()) == 1
    log = log_since(containerd, mark)
    assert log.count("building VM template") == 1, log
    assert log.count("cloned from a template") == 10


def test_corrupt_template_falls_back_to_cold_and_is_replaced(
        containerd: PrivateContainerd, demo_image: str, no_leaks: None) -> None:
    only_on(containerd, "1.7")
    run(containerd, demo_image, "true")
    (digest,) = templates()
    (TEMPLATES / digest / "state").write_bytes(b"not a QEMU migration stream" * 100)
    mark = len(containerd.log_text())
    code, out, err = run(containerd, demo_image, "echo", "still-runs")
    assert (code, out) == (0, "still-runs\n"), err
    log = log_since(containerd, mark)
    assert f"template {digest} removed: restoring sandbox" in log, log
    assert "booting cold instead" in log and "VM pid" in log and "cold boot" in log
    assert digest not in templates()
    code, _, err = run(containerd, demo_image, "true")  # the next sandbox builds it anew
    assert code == 0, err
    assert templates() == [digest]


def test_stale_template_is_not_used_and_is_replaced(containerd: PrivateContainerd,
                                                    demo_image: str, no_leaks: None,
                                                    tmp_path: Path) -> None:
    only_on(containerd, "2.1")
    run(containerd, demo_image, "true")
    (old,) = templates()
    # Other kernel parameters make another machine: the old template must not be used.
    cfg = config_file(tmp_path, kernel_params="bulkhead.debug=0")
    code, _, err = run(containerd, demo_image, "true", opts=("--runtime-config-path", str(cfg)))
    assert code == 0, err
    (new,) = templates()
    assert new != old  # replaced, not kept beside it
    code, _, err = run(containerd, demo_image, "true")  # back to the default: rebuilt once more
    assert code == 0, err
    assert templates() == [old]


@pytest.mark.parametrize("boot", ["template", "cold"])
def test_containers_behave_the_same_in_both_modes(containerd: PrivateContainerd,
                                                  demo_image: str, no_leaks: None,
                                                  tmp_path: Path, boot: str) -> None:
    only_on(containerd, "1.6")
    cfg = config_file(tmp_path, boot=boot)
    vol = tmp_path / "vol"
    vol.mkdir()
    mark = len(containerd.log_text())
    code, out, err = run(containerd, demo_image, "sh", "-c",
                         "echo out; echo err >&2; ls /bin/busybox; echo hi > /data/f; exit 3",
                         opts=("--runtime-config-path", str(cfg), "--mount",
                               f"type=bind,src={vol},dst=/data,options=rbind:rw"))
    assert code == 3, err
    lines = out.splitlines()
    assert lines[:2] == ["out", "/bin/busybox"] and err.strip() == "err"
    assert (vol / "f").read_text() == "hi\n"
    log = log_since(containerd, mark)
    assert ("cloned from a template" if boot == "template" else "cold boot") in log, log
    with detached(containerd, demo_image, "sleep", "600",
                  opts=("--runtime-config-path", str(cfg))) as cid:
        res = exec_(containerd, cid, "sh", "-c", "echo exec-ok; exit 4")
        assert (res.returncode, res.stdout) == (4, "exec-ok\n"), res.stderr
