"""Root conftest: load the hypothesis profile and report it in the pytest header.

The profile comes from ``$BILEVEL_CHECK_HYPOTHESIS_PROFILE`` (``default``, ``ci`` or
``nightly``; see :mod:`bilevel_check.oracle.strategies`). An unknown name stops the run
with an error naming the variable.
"""

from __future__ import annotations

from hypothesis import settings

from bilevel_check.oracle.strategies import load_profile_from_env

PROFILE_NAME = load_profile_from_env()


def pytest_report_header(config):
    return (
        f"bilevel-check hypothesis profile: {PROFILE_NAME} "
        f"(max_examples={settings.default.max_examples})"
    )
