"""Go `flag`-style command line of a containerd shim: -x v, -x=v, --x v; the action comes last."""

from __future__ import annotations

from dataclasses import dataclass

BOOL_FLAGS = {"debug", "v", "version", "info"}
VALUE_FLAGS = {"namespace", "id", "address", "publish-binary", "bundle", "socket", "debug-socket"}


class UsageError(Exception):
    """The command line could not be understood."""


@dataclass
class ShimArgs:
    """Parsed shim invocation."""

    namespace: str = ""
    id: str = ""
    address: str = ""
    publish_binary: str = ""
    bundle: str = ""
    socket: str = ""
    debug: bool = False
    version: bool = False
    info: bool = False
    action: str = ""


def parse(argv: list[str]) -> ShimArgs:
    """Parse argv (without the program name); unknown flags are tolerated like Go shims do."""
    args = ShimArgs()
    i = 0
    positional: list[str] = []
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-") or arg in ("-", "--"):
            positional.append(arg)
            continue
        name, eq, value = arg.lstrip("-").partition("=")
        if name in BOOL_FLAGS:
            setattr(args, name if name != "v" else "version",
                    value.lower() not in ("false", "0") if eq else True)
            continue
        if name not in VALUE_FLAGS:
            continue  # unknown flags are tolerated (taken as booleans unless written -x=v)
        if not eq:
            if i >= len(argv):
                raise UsageError(f"flag needs an argument: -{name}")
            value = argv[i]
            i += 1
        if name in VALUE_FLAGS:
            setattr(args, name.replace("-", "_"), value)
    if positional:
        args.action = positional[-1]
    return args
