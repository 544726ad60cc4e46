"""Template keys and the on-disk store: names follow inputs, builds are atomic and locked."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from pathlib import Path

import pytest
from bulkhead import paths
from bulkhead.template import store
from bulkhead.template.key import TemplateError, TemplateKey

KEY = TemplateKey(guest_image="img1", qemu="/usr/bin/qemu:1:2", accel="tcg", memory_mib=2,
                  vcpus=1, channel="serial", device_set=2, kernel_cmdline="console=ttyS0")


@pytest.fixture(autouse=True)
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(paths, "RUN_DIR", str(tmp_path))
    return tmp_path


def make(key: TemplateKey = KEY, memory: int = 2 << 20) -> store.Template:
    build = store.new_build_dir(key.digest)
    (build / store.MEMORY).write_bytes(b"\0" * memory)
    (build / store.STATE).write_bytes(b"QEVM")
    return store.commit(build, key, {"accel": key.accel})


def test_every_input_changes_the_name() -> None:
    names = {KEY.digest}
    for field in dataclasses.fields(TemplateKey):
        value = getattr(KEY, field.name)
        changed = value + 1 if isinstance(value, int) else value + "x"
        names.add(dataclasses.replace(KEY, **{field.name: changed}).digest)
    assert len(names) == 1 + len(dataclasses.fields(TemplateKey))


def test_commit_is_whole_and_listed(run_dir: Path) -> None:
    template = make()
    assert store.load(KEY.digest) is not None and template.problem(KEY) == ""
    assert [t.digest for t in store.all_templates()] == [KEY.digest]
    assert not [p for p in (run_dir / "templates").iterdir() if p.name.startswith(".build-")]
    manifest = json.loads((template.dir / store.MANIFEST).read_text())
    assert manifest["key"]["memory_mib"] == 2 and manifest["accel"] == "tcg"


def test_damaged_templates_say_why() -> None:
    template = make()
    (template.state).write_bytes(b"")
    assert "state has 0 bytes" in template.problem()
    template.memory.unlink()
    assert template.problem() == "memory is missing"
    other = dataclasses.replace(KEY, vcpus=2)
    assert "does not match" in template.problem(other)
    short = make(dataclasses.replace(KEY, guest_image="img2"), memory=4096)
    assert "not 2097152" in short.problem()


def test_dead_builds_are_removed_live_ones_kept(run_dir: Path) -> None:
    base = run_dir / "templates"
    base.mkdir()
    dead = base / ".build-abc-999999999"
    dead.mkdir()
    live = base / f".build-def-{os.getpid()}"
    live.mkdir()
    store.remove_dead_builds()
    assert not dead.exists() and live.exists()


def test_one_builder_at_a_time() -> None:
    order: list[str] = []

    async def builder(name: str) -> None:
        async with store.locked(KEY.digest, timeout=5):
            order.append(f"{name} in")
            await asyncio.sleep(0.1)
            order.append(f"{name} out")

    async def main() -> None:
        await asyncio.gather(builder("a"), builder("b"))
        with pytest.raises(TemplateError, match="building it for over"):
            async with store.locked(KEY.digest, timeout=5):
                async with store.locked(KEY.digest, timeout=0.2):
                    pass

    asyncio.run(main())
    assert order in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])


def test_no_lock_file_outlives_its_build(run_dir: Path) -> None:
    """The lock goes with the build; a waiter that won the unlinked file locks the new one."""
    order: list[str] = []

    async def builder(name: str) -> None:
        async with store.locked(KEY.digest, timeout=5):
            order.append(f"{name} in")
            assert (run_dir / "templates" / (KEY.digest + store.LOCK_SUFFIX)).exists()
            await asyncio.sleep(0.05)
            order.append(f"{name} out")

    async def main() -> None:
        await asyncio.gather(*(builder(n) for n in "abc"))

    asyncio.run(main())
    assert [o for o in order if o.endswith("in")] == [o.replace("out", "in") for o in order
                                                      if o.endswith("out")]
    assert all(a[0] == b[0] for a, b in zip(order[::2], order[1::2], strict=True)), order
    assert os.listdir(run_dir / "templates") == []
