"""The node installer test's "restart containerd": stop the containerd this script started
last (pid file), then start the scratch node's own binary on the node's config, with the host
paths it writes moved to a scratch directory. `stop` only stops it."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from config_containerd import redirect_host_paths  # noqa: E402

CTR = "/opt/bulkhead/containerd-1.7/usr/bin/ctr"


def stop(scratch: Path) -> None:
    pid_file = scratch / "containerd.pid"
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    pid_file.unlink()


def start(host: Path, scratch: Path) -> None:
    run = scratch / "run"
    run.mkdir(parents=True, exist_ok=True)
    config = run / "config.toml"
    config.write_text(redirect_host_paths((host / "etc/containerd/config.toml").read_text(), run))
    with (scratch / "containerd.log").open("ab") as log:
        proc = subprocess.Popen([str(host / "usr/bin/containerd"), "--config", str(config)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    (scratch / "containerd.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"containerd exited {proc.returncode}; see {scratch / 'containerd.log'}")
        ok = subprocess.run([CTR, "--address", str(run / "c.sock"), "version"],
                            capture_output=True, check=False).returncode == 0
        if ok:
            return
        time.sleep(0.1)
    sys.exit("containerd did not answer within 20 s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["restart", "stop"])
    parser.add_argument("--host", type=Path, required=True)
    parser.add_argument("--scratch", type=Path, required=True)
    args = parser.parse_args()
    stop(args.scratch)
    if args.action == "restart":
        start(args.host, args.scratch)


if __name__ == "__main__":
    main()
