"""A process's stdin FIFO: our read end of the FIFO containerd's client created.

The stdio link forwards it to the process's stdin stream until the client's last writer left
(read() == 0 with POLLHUP: see bulkhead_wire.stdio.pump) or CloseIO.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from urllib.parse import urlparse

from bulkhead.stdio.fifo import NotAFifo, open_fifo


class StdinError(Exception):
    """The stdin FIFO cannot be opened; the message names it."""


@dataclass
class StdinFifo:
    """Our read end of the client's stdin FIFO (non-blocking)."""

    fd: int

    @classmethod
    def open(cls, uri: str) -> StdinFifo | None:
        """Open the stdin FIFO the client created; "" means no stdin."""
        if not uri:
            return None
        path = urlparse(uri).path if uri.startswith("fifo://") else uri
        try:
            fd = open_fifo(path, os.O_RDONLY)
        except NotAFifo as exc:
            raise StdinError(f"stdin FIFO: {exc}") from None
        except OSError as exc:
            raise StdinError(f"stdin FIFO {path}: {exc.strerror}") from None
        return cls(fd)

    def close(self) -> None:
        """Release the FIFO."""
        with contextlib.suppress(OSError):
            os.close(self.fd)
