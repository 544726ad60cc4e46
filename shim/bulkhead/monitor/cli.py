"""`bulkhead monitor`: Prometheus metrics of every live sandbox on this host."""

from __future__ import annotations

import argparse
import sys

DEFAULT_LISTEN = "127.0.0.1:9619"


def build_parser(parser: argparse.ArgumentParser) -> None:
    """Options of `bulkhead monitor`."""
    parser.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                        help=f"address to serve /metrics on (default {DEFAULT_LISTEN}; port 0 "
                             "picks a free one)")
    parser.add_argument("--once", action="store_true",
                        help="print one scrape on stdout and exit instead of serving")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT (or print once)."""
    from bulkhead.monitor import server

    if args.once:
        sys.stdout.write(server.exposition().decode())
        return 0
    try:
        host, port = server.parse_listen(args.listen)
        httpd = server.start(host, port)
    except server.ListenError as exc:
        print(f"bulkhead monitor: {exc}", file=sys.stderr)
        return 2
    bound_port = httpd.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"bulkhead monitor: serving http://{shown}:{bound_port}/metrics", file=sys.stderr,
          flush=True)
    server.serve_until_signalled(httpd)
    return 0
