"""Which files a VM's QEMU may reach (its Landlock ruleset): its own sandbox, and nothing else.

QEMU is the host process a guest attacks first. Taken over, it keeps root's uid, but this
ruleset, applied before exec and never lifted, leaves it: the system's programs and libraries
to read (/usr), its own state directory and share to serve (no device nodes, nothing to
execute), its kernel, initrd and image to read, its template memory (to read and write its
own file only), and the few devices it opens. No other sandbox's directory, no /etc, /proc,
/var or /root, no TCP, no signals to or abstract sockets of processes outside it.
"""

from __future__ import annotations

import os
from pathlib import Path

from bulkhead.vmm import landlock
from bulkhead.vmm.base import VMConfig, VMError
from bulkhead.vmm.landlock import DEVICE, READ_FILE, READ_TREE, SHARE_TREE, WRITE_FILE, Rule

SYSTEM_TREES = ("/usr",)  # programs, libraries, QEMU's firmware (/lib* link into /usr)
SYSTEM_FILES = ("/etc/ld.so.cache",)
DEVICES = ("/dev/null", "/dev/urandom", "/dev/random", "/dev/kvm", "/dev/net/tun")


def qemu_rules(config: VMConfig, binary: str) -> list[Rule]:
    """The ruleset's allowances for one VM's QEMU (paths that do not exist are left out)."""
    rules = [Rule(p, READ_TREE) for p in SYSTEM_TREES]
    rules += [Rule(p, READ_FILE) for p in SYSTEM_FILES]
    rules += [Rule(p, DEVICE) for p in DEVICES]
    rules.append(Rule(binary, READ_TREE))
    rules += [Rule(str(p), READ_FILE) for p in (config.kernel, config.initrd, config.rootfs)]
    rules.append(Rule(str(config.state_dir), SHARE_TREE))
    rules.append(Rule(str(config.shared_dir), SHARE_TREE))
    if config.memory_file is not None:
        if config.memory_shared:  # a template being made: QEMU creates its memory file
            rules.append(Rule(str(config.memory_file.parent), SHARE_TREE))
        else:
            rules.append(Rule(str(config.memory_file), READ_FILE | WRITE_FILE))
    return [r for r in rules if os.path.exists(r.path)]


def qemu_ruleset(config: VMConfig, binary: Path) -> int | None:
    """A ruleset fd for spawn(), or None where the kernel has no Landlock and the config
    allows an unconfined QEMU; VMError otherwise."""
    abi = landlock.abi_version()
    if abi == 0:
        if config.allow_unfiltered:
            return None
        raise VMError(f"VM {config.name}: this kernel has no Landlock, so QEMU cannot be "
                      "confined to its sandbox; set allow_unfiltered_qemu = true to run it "
                      "unconfined")
    try:
        return landlock.build_ruleset(qemu_rules(config, str(binary)), abi)
    except OSError as exc:
        raise VMError(f"VM {config.name}: QEMU's Landlock ruleset: {exc}") from exc
