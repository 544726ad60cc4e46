"""Puts the repository's tests/ directory on sys.path, so that benchmarks import the test harness
(tests/harness: private containerd instances, CNI networks, the monitor as a child) and the CRI
client (tests/cri) from there, as pytest does; pyproject's mypy_path lists tests/ so that
`mypy bench` type-checks against them. Import it before either."""

from __future__ import annotations

import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[1] / "tests"
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))
