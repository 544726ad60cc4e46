"""The runtime handler merge into containerd's config.toml: formats per version, comments and
other settings kept, idempotence, the problems it reports and the files it refuses."""

from __future__ import annotations

import datetime
import tomllib
from pathlib import Path

import pytest
from bulkhead import cli
from bulkhead.install import config_file
from bulkhead.install import containerd_config as cc

V2_RUNTIME = ("plugins", "io.containerd.grpc.v1.cri", "containerd", "runtimes", "bulkhead")
V3_RUNTIME = ("plugins", "io.containerd.cri.v1.runtime", "containerd", "runtimes", "bulkhead")

USER_V2 = """\
# Node config, managed by hand.  Keep this comment.
version = 2
root = "/var/lib/containerd"   # the big disk
oom_score = -999

[grpc]
  address = "/run/containerd/containerd.sock"   # kubelet points here

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.example/pause:3.9"
  restrict_oom_score_adj = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    # runc stays the default
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = true

[metrics]
  address = "127.0.0.1:1338"
"""


def dig(text: str, path: tuple[str, ...]) -> object:
    node: object = tomllib.loads(text)
    for key in path:
        assert isinstance(node, dict), f"{key} under a non-table"
        node = node[key]
    return node


@pytest.mark.parametrize("version, want", [
    ("1.6.20~ds1", 2), ("1.7.24", 2), ("v1.7.0", 2), ("2.0.0", 3), ("2.1.9+unknown", 3),
])
def test_config_version_for(version: str, want: int) -> None:
    assert cc.config_version_for(version) == want


@pytest.mark.parametrize("version", ["1.5.9", "banana", ""])
def test_config_version_for_refuses(version: str) -> None:
    with pytest.raises(cc.ContainerdConfigError):
        cc.config_version_for(version)


def test_detect_version_names_the_binary(tmp_path: Path) -> None:
    with pytest.raises(cc.ContainerdConfigError, match="no-such-containerd"):
        cc.detect_containerd_version(str(tmp_path / "no-such-containerd"))
    fake = tmp_path / "containerd"
    fake.write_text("#!/bin/sh\necho 'containerd github.com/containerd/containerd v1.7.3 abc'\n")
    fake.chmod(0o755)
    assert cc.detect_containerd_version(str(fake)) == "1.7.3"
    fake.write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
    with pytest.raises(cc.ContainerdConfigError, match=r"exited 3.*broken"):
        cc.detect_containerd_version(str(fake))


def test_cap_sys_resource_bit(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t000001fffeffffff\n")
    assert not cc.has_cap_sys_resource(str(status))
    status.write_text("Name:\tx\nCapEff:\t000001ffffffffff\n")
    assert cc.has_cap_sys_resource(str(status))


@pytest.mark.parametrize("version, path", [("1.7.24", V2_RUNTIME), ("2.1.9", V3_RUNTIME)])
def test_empty_file_gets_version_and_handler(version: str, path: tuple[str, ...]) -> None:
    merged = cc.merge_handler("", version, restrict_oom_score_adj=True)
    assert dig(merged, ("version",)) == cc.config_version_for(version)
    assert dig(merged, path) == cc.handler_settings()
    assert dig(merged, path[:2] + ("restrict_oom_score_adj",)) is True
    assert cc.handler_problems(merged, version, restrict_oom_score_adj=True) == []


def test_comments_and_settings_survive() -> None:
    merged = cc.merge_handler(USER_V2, "1.7.24", restrict_oom_score_adj=True)
    for line in USER_V2.splitlines():
        if "restrict_oom_score_adj" not in line:
            assert line in merged.splitlines(), f"lost: {line!r}"
    assert '  restrict_oom_score_adj = true' in merged.splitlines()
    assert dig(merged, ("oom_score",)) == -999
    assert dig(merged, V2_RUNTIME[:4] + ("runc", "options", "SystemdCgroup")) is True
    assert dig(merged, V2_RUNTIME)["runtime_type"] == cc.RUNTIME_TYPE  # type: ignore[index]
    # the new table sits with the other runtimes and is indented like them
    assert merged.index("runtimes.bulkhead]") < merged.index("[metrics]")
    assert '    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.bulkhead]' in merged
    assert '      runtime_type = "io.containerd.bulkhead.v2"' in merged


def test_merge_is_idempotent() -> None:
    for text, version in (("", "1.6.20"), ("", "2.1.9"), (USER_V2, "1.7.24")):
        once = cc.merge_handler(text, version, restrict_oom_score_adj=True)
        assert cc.merge_handler(once, version, restrict_oom_score_adj=True) == once


def test_required_keys_are_fixed_optional_ones_kept() -> None:
    text = USER_V2 + """
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.bulkhead]
  runtime_type = "io.containerd.kata.v2"
  pod_annotations = ["mine/*"]
  privileged_without_host_devices = false
"""
    problems = cc.handler_problems(text, "1.7.24", restrict_oom_score_adj=False)
    assert len(problems) == 2
    assert all("--apply" in p for p in problems)
    merged = cc.merge_handler(text, "1.7.24", restrict_oom_score_adj=False)
    runtime = dig(merged, V2_RUNTIME)
    assert runtime == {"runtime_type": cc.RUNTIME_TYPE, "privileged_without_host_devices": True,
                       "pod_annotations": ["mine/*"],
                       "container_annotations": list(cc.ANNOTATION_GLOBS)}
    # not asked to restrict: the user's false stays
    assert dig(merged, V2_RUNTIME[:2] + ("restrict_oom_score_adj",)) is False


def test_problems_name_each_fix() -> None:
    problems = cc.handler_problems(USER_V2, "1.7.24", restrict_oom_score_adj=True,
                                   source="/etc/x.toml")
    assert len(problems) == 2
    assert "declares no runtime `bulkhead`" in problems[0] and "/etc/x.toml" in problems[0]
    assert "restrict_oom_score_adj = true" in problems[1] and "--apply" in problems[1]
    assert cc.handler_problems(USER_V2, "1.7.24", restrict_oom_score_adj=False)[0].startswith(
        "/etc/containerd/config.toml declares no runtime")


def test_other_runtime_name() -> None:
    merged = cc.merge_handler("", "2.1.9", runtime_name="vm", restrict_oom_score_adj=False)
    assert dig(merged, V3_RUNTIME[:-1] + ("vm", "runtime_type")) == cc.RUNTIME_TYPE
    assert cc.handler_problems(merged, "2.1.9", runtime_name="vm",
                               restrict_oom_score_adj=False) == []
    assert len(cc.handler_problems(merged, "2.1.9", restrict_oom_score_adj=False)) == 1


def test_wrong_version_is_refused_with_fix() -> None:
    with pytest.raises(cc.ContainerdConfigError, match=r"x.toml is config version 2 but "
                       r"containerd 2.1.9 needs version 3: .*config migrate"):
        cc.merge_handler(USER_V2, "2.1.9", source="x.toml")
    assert "config migrate" in cc.handler_problems(USER_V2, "2.1.9", source="x.toml")[0]
    v3 = cc.merge_handler("", "2.1.9", restrict_oom_score_adj=True)
    with pytest.raises(cc.ContainerdConfigError, match="reads version 2: restore"):
        cc.merge_handler(v3, "1.7.24")


def test_unversioned_file_is_refused_not_rewritten() -> None:
    v1 = '# docker\'s default\ndisabled_plugins = ["cri"]\n[plugins.cri]\n  x = 1\n'
    with pytest.raises(cc.ContainerdConfigError, match="reads it as config version 1"):
        cc.merge_handler(v1, "1.7.24")
    assert "version 1" in cc.handler_problems(v1, "1.7.24")[0]
    # nothing but comments is blank: written from scratch, the comments kept
    merged = cc.merge_handler("# nothing yet\n", "1.7.24", restrict_oom_score_adj=False)
    assert merged.startswith("# nothing yet\nversion = 2\n")


def test_disabled_cri_is_reported_not_undone() -> None:
    text = 'version = 3\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
    merged = cc.merge_handler(text, "2.1.9", restrict_oom_score_adj=False)
    assert dig(merged, ("disabled_plugins",)) == ["io.containerd.grpc.v1.cri"]
    problems = cc.handler_problems(merged, "2.1.9", restrict_oom_score_adj=False)
    assert problems == [f"{cc.DEFAULT_CONFIG} disables the CRI plugin (disabled_plugins has "
                        "'io.containerd.grpc.v1.cri'), so Kubernetes cannot use containerd: "
                        "remove 'io.containerd.grpc.v1.cri' from disabled_plugins"]


def test_bad_toml_and_non_table() -> None:
    assert "not valid TOML" in cc.handler_problems("version = = 2", "1.7.24")[0]
    with pytest.raises(cc.ContainerdConfigError, match="not valid TOML"):
        cc.merge_handler("[x", "1.7.24")
    with pytest.raises(cc.ContainerdConfigError, match="not a table"):
        cc.merge_handler('version = 2\nplugins = "no"\n', "1.7.24")


def test_apply_backup_and_noop(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(USER_V2)
    path.chmod(0o600)
    change = config_file.plan_merge(path, "1.7.24", restrict_oom_score_adj=True)
    assert change.changed and change.diff().startswith(f"--- {path}\n+++ {path}\n")
    backup = config_file.apply(change)
    assert backup is not None and backup.read_text() == USER_V2
    assert backup.name.startswith("config.toml.bak.") and backup.name.endswith("Z")
    assert path.read_text() == change.new_text and path.stat().st_mode & 0o777 == 0o600
    again = config_file.plan_merge(path, "1.7.24", restrict_oom_score_adj=True)
    assert not again.changed and again.diff() == "" and config_file.apply(again) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["config.toml", backup.name])


def test_backup_names_never_collide(tmp_path: Path) -> None:
    now = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    path = tmp_path / "config.toml"
    first = config_file.backup_path(path, now)
    assert first.name == "config.toml.bak.20250102T030405Z"
    first.write_text("")
    assert config_file.backup_path(path, now).name == "config.toml.bak.20250102T030405Z.1"


def test_cli_print_dry_run_apply(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "sub" / "config.toml"
    base = ["containerd-config", "--config", str(path), "--containerd-version", "2.1.9"]
    assert cli.main(base) == 0
    printed = capsys.readouterr().out
    assert 'runtimes.bulkhead]' in printed and "version = 3" in printed
    assert cli.main([*base, "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("--- /dev/null\n")
    assert not path.exists()
    path.parent.mkdir()
    assert cli.main([*base, "--apply"]) == 0
    assert "created" in capsys.readouterr().out
    assert cli.main([*base, "--apply"]) == 0
    assert "nothing changed" in capsys.readouterr().out
    assert cli.main([*base, "--dry-run"]) == 0
    assert "no change" in capsys.readouterr().out
    assert list(path.parent.iterdir()) == [path]
    assert cli.main([*base[:-1], "1.7.1", "--apply"]) == 1
    assert "needs" not in (err := capsys.readouterr().err) and "reads version 2" in err


def test_tables_split_over_the_file() -> None:
    """A table whose sub-tables are interleaved with others (tomlkit's out-of-order proxy)."""
    text = ('version = 2\n[plugins."io.containerd.grpc.v1.cri".containerd]\n  snapshotter = "x"\n'
            '[metrics]\n  address = ""\n'
            '[plugins."io.containerd.grpc.v1.cri".cni]\n  bin_dir = "/x"\n')
    merged = cc.merge_handler(text, "1.7.24", restrict_oom_score_adj=True)
    assert dig(merged, V2_RUNTIME[:2] + ("cni", "bin_dir")) == "/x"
    assert dig(merged, V2_RUNTIME[:3] + ("snapshotter",)) == "x"
    assert dig(merged, V2_RUNTIME[:2] + ("restrict_oom_score_adj",)) is True
    assert dig(merged, V2_RUNTIME) == cc.handler_settings()
    assert cc.merge_handler(merged, "1.7.24", restrict_oom_score_adj=True) == merged
