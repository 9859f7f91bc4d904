"""Root conftest: load the hypothesis profile and report it in the pytest header; put
``tests/`` on ``sys.path`` (for ``tests/broken_impls.py``, shared with ``properties/``).

The profile comes from ``$BILEVEL_CHECK_HYPOTHESIS_PROFILE`` (``default``, ``ci`` or
``nightly``; see :mod:`bilevel_check.oracle.strategies`). An unknown name stops the run
with an error naming the variable.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hypothesis import settings

from bilevel_check.oracle.strategies import load_profile_from_env

PROFILE_NAME = load_profile_from_env()

# tests/broken_impls.py, the one catalogue of broken implementations, is shared by the
# suites of tests/ and properties/: make it importable from both
_TESTS = str(Path(__file__).resolve().parent / "tests")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)


def pytest_report_header(config):
    return (
        f"bilevel-check hypothesis profile: {PROFILE_NAME} "
        f"(max_examples={settings.default.max_examples})"
    )
