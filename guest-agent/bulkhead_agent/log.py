"""Agent logging: a file on tmpfs (the console UART is slow); grave news also to the kernel log."""

from __future__ import annotations

import logging
import os
import sys
import time

from bulkhead_wire.guest_abi import AGENT_CONSOLE_PREFIX

# Set by main when the agent is PID 1 in a guest; never write the host's kernel log.
kernel_log_enabled = False


def setup(path: str, debug: bool) -> None:
    """Log to `path`; times are guest uptimes so they line up with the boot marks."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(_UptimeFormatter("%(uptime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)


class _UptimeFormatter(logging.Formatter):
    """Prefix records with CLOCK_BOOTTIME seconds instead of wall time."""

    def format(self, record: logging.LogRecord) -> str:
        record.uptime = f"{time.clock_gettime(time.CLOCK_BOOTTIME):10.6f}"
        return super().format(record)


def kernel(message: str, level: int = 4) -> None:
    """One line to /dev/kmsg (shown on the console, so in the shim's console tail)."""
    line = f"{AGENT_CONSOLE_PREFIX}{message}"
    if not kernel_log_enabled:
        print(line, file=sys.stderr, flush=True)
        return
    for path, text in (("/dev/kmsg", f"<{level}>{line}\n"), ("/dev/console", f"{line}\n")):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            os.write(fd, text.encode()[:1000])
            return
        except OSError:
            continue
        finally:
            os.close(fd)


def console(message: str) -> None:
    """One line straight to the serial console, whatever the kernel's console log level (the
    shim watches the console log for it)."""
    line = f"{AGENT_CONSOLE_PREFIX}{message}\n"
    if not kernel_log_enabled:
        print(line, end="", file=sys.stderr, flush=True)
        return
    try:
        fd = os.open("/dev/console", os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.write(fd, line.encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def fatal(message: str) -> None:
    """Say why the agent cannot go on, in its log and where the console tail shows it."""
    logging.getLogger("bulkhead_agent").critical(message)
    kernel(f"fatal: {message}", level=2)
