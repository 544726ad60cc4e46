"""Entry point: `python3 -m bulkhead_agent` (PID 1 in the guest, or a development run)."""

import time

# Taken before any heavy import, so Check can report when the agent process really began.
_START_UPTIME = time.clock_gettime(time.CLOCK_BOOTTIME)

import sys  # noqa: E402

# asyncio imports ssl when it can; the agent never speaks TLS, and the import costs start-up time.
sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]

from bulkhead_agent.main import main  # noqa: E402

main(_START_UPTIME)
