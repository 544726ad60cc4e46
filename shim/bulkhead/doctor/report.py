"""What a check found, how long it took, and how findings are shown (text or JSON) and judged
(the exit status): the part of the doctor that needs no host."""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import TypeVar


class Status(StrEnum):
    """ok and warning pass; a failure means Bulkhead will not work here as configured."""

    OK = "ok"
    WARNING = "warning"
    FAILURE = "failure"
    SKIPPED = "skipped"


@dataclass
class Finding:
    """One check's verdict: a one-line detail with the measured value, and the fix if not ok."""

    name: str
    status: Status
    detail: str
    fix: str = ""
    duration: float = 0.0

    def as_json(self) -> dict[str, object]:
        data = asdict(self)
        data["status"] = self.status.value
        data["duration"] = round(self.duration, 4)
        return data


def ok(name: str, detail: str) -> Finding:
    return Finding(name, Status.OK, detail)


def warning(name: str, detail: str, fix: str) -> Finding:
    return Finding(name, Status.WARNING, detail, fix)


def failure(name: str, detail: str, fix: str) -> Finding:
    return Finding(name, Status.FAILURE, detail, fix)


def worst(statuses: Iterable[Status]) -> Status:
    """The most serious of several statuses (ok if there are none)."""
    order = (Status.OK, Status.SKIPPED, Status.WARNING, Status.FAILURE)
    return max(statuses, key=order.index, default=Status.OK)


Ctx = TypeVar("Ctx")
Check = Callable[[Ctx], Iterator[Finding]]


def run_check(group: str, check: Check[Ctx], ctx: Ctx) -> list[Finding]:
    """Run one check group, timing each finding from the previous one; a crash of the check
    itself becomes a failure naming the group, so one bug never hides the other checks."""
    findings: list[Finding] = []
    start = time.monotonic()
    iterator = check(ctx)
    while True:
        try:
            finding = next(iterator)
        except StopIteration:
            break
        except Exception as exc:  # reported as this group's failure
            where = traceback.extract_tb(exc.__traceback__)[-1]
            findings.append(failure(
                group, f"the check itself failed: {type(exc).__name__}: {exc} "
                       f"({where.filename}:{where.lineno})",
                "report this as a Bulkhead bug, with the output of `bulkhead doctor --json`"))
            findings[-1].duration = time.monotonic() - start
            break
        now = time.monotonic()
        finding.duration = now - start
        start = now
        findings.append(finding)
    return findings


def exit_code(findings: Iterable[Finding]) -> int:
    """0 unless something failed: warnings name costs or missing extras, not breakage."""
    return 1 if any(f.status is Status.FAILURE for f in findings) else 0


def render_json(findings: Iterable[Finding]) -> str:
    """The machine-readable list: name, status, detail, fix, duration (seconds)."""
    return json.dumps([f.as_json() for f in findings], indent=1)


_MARK = {Status.OK: "ok", Status.WARNING: "WARN", Status.FAILURE: "FAIL", Status.SKIPPED: "skip"}


def render_line(finding: Finding, name_width: int = 22) -> str:
    """`ok   name   detail  (0.12 s)` and, when there is one, an indented `fix:` line."""
    pad = " " * (5 + name_width + 1)
    first, *more = finding.detail.splitlines() or [""]
    text = (f"{_MARK[finding.status]:<5}{finding.name:<{name_width}} {first}"
            f"  ({finding.duration:.2f} s)")
    text += "".join(f"\n{pad}  {line}" for line in more)
    if finding.fix and finding.status in (Status.WARNING, Status.FAILURE):
        text += "\n" + "\n".join(f"{pad}{'fix: ' if i == 0 else '     '}{line}"
                                 for i, line in enumerate(finding.fix.splitlines()))
    return text


def summary(findings: list[Finding], wall: float) -> str:
    """The closing line: counts per status and the doctor's wall time."""
    counts = {s: sum(1 for f in findings if f.status is s) for s in Status}
    parts = [f"{counts[Status.OK]} ok", f"{counts[Status.WARNING]} warning(s)",
             f"{counts[Status.FAILURE]} failure(s)"]
    if counts[Status.SKIPPED]:
        parts.append(f"{counts[Status.SKIPPED]} skipped")
    verdict = "FAILED" if exit_code(findings) else "healthy"
    return f"bulkhead doctor: {verdict}: {', '.join(parts)} in {wall:.2f} s"
