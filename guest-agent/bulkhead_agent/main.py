"""Agent start-up and the connection loop: set up the machine, then serve the shim forever."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time

from bulkhead_wire.guest_abi import AGENT_SERVICE
from bulkhead_wire.ttrpc import Server

from bulkhead_agent import __version__, cgroup, channel, system
from bulkhead_agent import log as agentlog
from bulkhead_agent.bootinfo import BootInfo, uptime
from bulkhead_agent.container import Supervisor
from bulkhead_agent.crun import Crun
from bulkhead_agent.options import Options, UsageError, parse_argv, parse_cmdline
from bulkhead_agent.reaper import Reaper
from bulkhead_agent.service import AgentService
from bulkhead_agent.template_prep import TemplatePrep

log = logging.getLogger("bulkhead_agent")

RECONNECT_DELAY = 0.5  # seconds before accepting again after a failed connection attempt


def load_options(argv: list[str]) -> Options:
    """Kernel command line first (guest), then argv (development overrides)."""
    opts = Options(pid1=os.getpid() == 1)
    if opts.pid1:
        try:
            with open("/proc/cmdline") as f:
                parse_cmdline(f.read(), opts)
        except OSError:
            pass
    return parse_argv(argv, opts)


def prepare_process(opts: Options) -> None:
    """Process-wide setup; the machine-wide part only when we are the guest's PID 1."""
    system.ensure_std_fds()
    system.ignore_sigpipe()
    if not opts.pid1:
        system.set_subreaper()
        return
    agentlog.kernel_log_enabled = True
    try:
        system.loopback_up()
    except OSError as exc:
        log.warning("cannot bring up lo: %s", exc)
    log.info("cgroup controllers enabled: %s", " ".join(cgroup.enable_controllers()) or "none")


class Agent:
    """Wires reaper, crun, supervisor and ttrpc service together and runs the link loop."""

    def __init__(self, opts: Options, start_uptime: float) -> None:
        self.opts = opts
        self.reaper = Reaper()
        crun = Crun(self.reaper, opts.crun, f"{opts.state_dir}/crun", opts.crun_root)
        self.supervisor = Supervisor(crun, self.reaper, opts.state_dir)
        self.stopped = asyncio.Event()
        self.template = TemplatePrep()
        service = AgentService(self.supervisor, BootInfo.collect(start_uptime), self.template)
        self.server = Server()
        self.server.register(AGENT_SERVICE, service.methods())

    async def run(self) -> None:
        """Serve one host connection after another (until SIGTERM in development)."""
        loop = asyncio.get_running_loop()
        self.reaper.install(loop)
        if not self.opts.pid1:
            loop.add_signal_handler(signal.SIGTERM, self.stopped.set)
        ctl, data = channel.endpoints(self.opts.channel, self.opts.listen_dir)
        ctl.on_waiting = data.on_waiting = self.template.port_waiting
        log.info("bulkhead-agent %s ready to connect over %s at uptime %.3f", __version__,
                 self.opts.channel, uptime())
        links = asyncio.ensure_future(self._link_loop(ctl, data))
        stop = asyncio.ensure_future(self.stopped.wait())
        try:
            await asyncio.wait({links, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (links, stop):
                task.cancel()
            await asyncio.gather(links, stop, return_exceptions=True)
            ctl.close()
            data.close()
            self.reaper.uninstall()
        if links.done() and not links.cancelled():
            links.result()  # re-raises whatever ended the link loop

    async def _link_loop(self, ctl: channel.SerialPort | channel.SocketListener,
                         data: channel.SerialPort | channel.SocketListener) -> None:
        """Accept, serve, and accept again: a host that went away may come back."""
        while True:
            try:
                await self._serve_once(ctl, data)
            except (OSError, asyncio.IncompleteReadError) as exc:
                log.warning("host link failed: %s; waiting for a new connection", exc)
                await asyncio.sleep(RECONNECT_DELAY)

    async def _serve_once(self, ctl: channel.SerialPort | channel.SocketListener,
                          data: channel.SerialPort | channel.SocketListener) -> None:
        """Connect both links, then serve ttrpc until the control link ends."""
        ctl_task = asyncio.ensure_future(ctl.accept())
        data_task = asyncio.ensure_future(data.accept())
        try:
            ctl_link, data_link = await asyncio.gather(ctl_task, data_task)
        except BaseException:
            for task in (ctl_task, data_task):
                task.cancel()
            for task in (ctl_task, data_task):
                if task.done() and not task.cancelled() and task.exception() is None:
                    task.result().close()
            raise
        log.info("host connected at uptime %.3f", uptime())
        self.supervisor.data.offer(data_link)
        try:
            reader, writer = await ctl_link.streams()
            await self.server.serve_connection(reader, writer)
        finally:
            await self.supervisor.data.close()
            ctl_link.close()
            data_link.close()
            log.info("host link closed at uptime %.3f", uptime())


def main(start_uptime: float) -> None:
    """Run the agent; as PID 1 it must never return, so it powers the VM off instead."""
    try:
        opts = load_options(sys.argv[1:])
    except UsageError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
    try:
        agentlog.setup(opts.log_file, opts.debug)
        log.info("bulkhead-agent %s starting (pid %d, uptime %.3f)", __version__, os.getpid(),
                 start_uptime)
        prepare_process(opts)
        asyncio.run(Agent(opts, start_uptime).run())
    except KeyboardInterrupt:
        if not opts.pid1:
            return
        agentlog.fatal("interrupted")
    except BaseException as exc:
        agentlog.fatal(f"{type(exc).__name__}: {exc}")
        log.exception("agent stopped")
        if not opts.pid1:
            raise
    if opts.pid1:
        _last_resort(restart=opts.shutdown == "reboot")


def _last_resort(restart: bool) -> None:
    """PID 1 exiting panics the kernel; power off instead so the shim sees a clean VM exit."""
    try:
        system.power_off(restart)
    except BaseException as exc:  # nothing left to do but say so and sleep
        agentlog.kernel(f"power off failed: {exc}", level=2)
    while True:
        time.sleep(3600)
