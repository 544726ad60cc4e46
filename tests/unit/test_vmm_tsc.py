"""The host TSC rate a TCG guest is told: from the kernel log, else from /proc/cpuinfo."""

from __future__ import annotations

from pathlib import Path

from bulkhead.vmm.tsc import host_tsc_khz, tcg_kernel_params


def test_host_tsc_khz_from_cpuinfo(tmp_path: Path) -> None:
    f, nolog = tmp_path / "cpuinfo", tmp_path / "nokmsg"
    known = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor @ 2.50GHz\n"
             "cpu MHz\t\t: 2499.998\nflags\t\t: fpu tsc constant_tsc tsc_known_freq\n\n"
             "processor\t: 1\ncpu MHz\t\t: 1200.000\n")
    f.write_text(known)
    assert host_tsc_khz(f, nolog) == 2499998
    f.write_text(known.replace(" tsc_known_freq", ""))
    assert host_tsc_khz(f, nolog) == 2500000  # nominal rate beats a scaled "cpu MHz"
    f.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13\ncpu MHz\t\t: 3049.998\n")
    assert host_tsc_khz(f, nolog) == 3049998
    f.write_text("processor\t: 0\nmodel name\t: something\n")
    assert host_tsc_khz(f, nolog) is None
    assert tcg_kernel_params(f, nolog) == []
    assert host_tsc_khz(tmp_path / "missing", nolog) is None


def test_host_tsc_khz_prefers_the_kernel_log(tmp_path: Path) -> None:
    cpuinfo, kmsg = tmp_path / "cpuinfo", tmp_path / "kmsg"
    cpuinfo.write_text("processor\t: 0\ncpu MHz\t\t: 1200.000\n")
    kmsg.write_bytes(b"6,16,21,-;tsc: Detected 2899.998 MHz processor\n"
                     b"6,300,1210427,-;tsc: Refined TSC clocksource calibration: 2900.012 MHz\n")
    assert host_tsc_khz(cpuinfo, kmsg) == 2900012
    kmsg.write_bytes(b"6,16,21,-;tsc: Detected 2899.998 MHz processor\n")
    assert host_tsc_khz(cpuinfo, kmsg) == 2899998
    assert tcg_kernel_params(cpuinfo, kmsg) == ["tsc_early_khz=2899998", "tsc=reliable"]


def test_tcg_params_on_this_host() -> None:
    params = tcg_kernel_params()
    if params:
        assert params[0].startswith("tsc_early_khz=") and params[1] == "tsc=reliable"
