"""`bulkhead template build | ls | rm`: the operator's view of the VM templates on this host."""

from __future__ import annotations

import argparse
import datetime
import sys

from bulkhead import config as config_mod
from bulkhead import event_loop
from bulkhead.template import store
from bulkhead.template.key import TemplateError


def build_parser(parser: argparse.ArgumentParser) -> None:
    """Sub-commands and their options."""
    sub = parser.add_subparsers(dest="template_command", required=True)
    build = sub.add_parser("build", help="build the template for the configured VM size "
                                         "(no-op if it exists and is whole)")
    build.add_argument("--memory-mib", type=int, help="guest RAM (default: the config's)")
    build.add_argument("--vcpus", type=int, help="vCPUs (default: the config's)")
    build.add_argument("--force", action="store_true", help="rebuild even if it exists")
    sub.add_parser("ls", help="list templates")
    rm = sub.add_parser("rm", help="remove templates (running clones are not affected)")
    rm.add_argument("digest", nargs="*", help="template names from `ls`")
    rm.add_argument("--all", action="store_true", help="remove every template")


def run(args: argparse.Namespace) -> int:
    """Dispatch; errors are one line on stderr and exit status 1."""
    try:
        if args.template_command == "build":
            return event_loop.run(_build(args))
        if args.template_command == "ls":
            return _list()
        return _remove(args)
    except (TemplateError, config_mod.ConfigError) as exc:
        print(f"bulkhead template: {exc}", file=sys.stderr)
        return 1


async def _build(args: argparse.Namespace) -> int:
    from bulkhead.template.planning import clone_config, template_key, vm_config
    from bulkhead.vmm.base import VMError

    cfg = config_mod.load()
    if args.memory_mib:
        cfg.memory_mib = args.memory_mib
    if args.vcpus:
        cfg.vcpus = args.vcpus
    image = cfg.guest_image()
    scratch = store.templates_dir()
    scratch.mkdir(parents=True, exist_ok=True)
    config = vm_config(cfg, image, "template", str(scratch), str(scratch))
    try:
        if args.force:
            store.remove((await template_key(config, image))[1].digest)
        _, key = await clone_config(config, image)
    except VMError as exc:
        raise TemplateError(str(exc)) from None
    template = store.load(key.digest)
    assert template is not None
    print(f"template {key.digest}: {key.memory_mib} MiB, {key.vcpus} vCPU, {key.accel}, "
          f"{key.channel}; {template.disk_usage() >> 20} MiB on tmpfs in {template.dir}")
    return 0


def _list() -> int:
    templates = store.all_templates()
    if not templates:
        print(f"no templates in {store.templates_dir()}")
        return 0
    print(f"{'TEMPLATE':26s}{'MEMORY':>8s}{'VCPUS':>6s}  {'ACCEL':6s}{'CHANNEL':8s}"
          f"{'ON TMPFS':>9s}  CREATED              STATUS")
    for t in templates:
        k = t.manifest.get("key", {})
        created = datetime.datetime.fromtimestamp(float(t.manifest.get("created", 0)))
        status = t.problem() or "ok"
        print(f"{t.digest:26s}{k.get('memory_mib', 0):>7d}M{k.get('vcpus', 0):>6d}  "
              f"{k.get('accel', '?'):6s}{k.get('channel', '?'):8s}"
              f"{t.disk_usage() >> 20:>8d}M  {created:%Y-%m-%d %H:%M:%S}  {status}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    digests = [t.digest for t in store.all_templates()] if args.all else args.digest
    if not digests:
        print("bulkhead template rm: name templates to remove, or --all", file=sys.stderr)
        return 2
    missing = [d for d in digests if not store.remove(d)]
    for digest in missing:
        print(f"bulkhead template rm: no template {digest}", file=sys.stderr)
    return 1 if missing else 0
