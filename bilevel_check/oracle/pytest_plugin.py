"""pytest plugin of bilevel-check (entry point ``pytest11``, loaded in every pytest run).

Fixtures:

* ``golden_case``: parametrized over the certified golden cases, test ids = case ids
  (select with ``-k dense-S2A2``); restrict groups with the ini option
  ``bilevel_golden_groups = random_dense low_temperature``.
* ``golden_cases``: the list of all (selected) golden cases (session scope).
* ``bilevel_oracle``: the :mod:`bilevel_check.oracle` module (``check_*`` functions).
* ``bilevel_strategies``: the :mod:`bilevel_check.oracle.strategies` module (hypothesis strategies).
* ``bilevel_tolerance_policy``: the default :class:`~bilevel_check.oracle.TolerancePolicy`.
* ``bilevel_expected_failed``: ``{case_id: reason}`` from the ini option (pass it on as
  ``check_*(..., expected_failed=bilevel_expected_failed)``).

Markers: ``slow``; ``xslow`` (skipped unless ``BILEVEL_CHECK_XSLOW=1``); ``gpu``
(skipped without a CUDA device); ``bilevel_expected_failed({case_id: reason})``.

Known gaps: a ``golden_case`` test whose case id is listed in the ini option
``bilevel_expected_failed`` (lines ``case_id: reason``) or in the test's
``bilevel_expected_failed`` marker is marked ``xfail(reason, strict=False)``.

The report header states the tolerance-policy version, the golden-suite version
and the active hypothesis profile. Importing this module costs only pytest and the
standard library; the golden suite is read the first time a test asks for it.
"""

from __future__ import annotations

import os
import sys

import pytest

XSLOW_ENV = "BILEVEL_CHECK_XSLOW"
_MARKERS = (
    "slow: long regression suites, run with `pytest -m slow`",
    f"xslow: very long suites, skipped unless {XSLOW_ENV}=1",
    "gpu: needs a CUDA device; skipped without one",
    "bilevel_expected_failed(mapping): {golden case id: reason} known gaps turned into xfail",
)
_cache: dict = {}


def pytest_addoption(parser):
    parser.addini(
        "bilevel_expected_failed",
        type="linelist",
        default=[],
        help="bilevel-check: known gaps, one 'case_id: reason' per line (become xfail)",
    )
    parser.addini(
        "bilevel_golden_groups",
        type="args",
        default=[],
        help="bilevel-check: golden groups parametrizing golden_case (default: all)",
    )


def pytest_configure(config):
    for line in _MARKERS:
        config.addinivalue_line("markers", line)


def expected_failed_from_ini(config) -> dict:
    """``{case_id: reason}`` parsed from the ``bilevel_expected_failed`` ini lines."""
    out = {}
    for line in config.getini("bilevel_expected_failed"):
        cid, sep, reason = line.partition(":")
        if not sep or not cid.strip():
            raise pytest.UsageError(
                f"bilevel_expected_failed: expected lines 'case_id: reason'; received {line!r}"
            )
        out[cid.strip()] = reason.strip() or "known gap"
    return out


def _golden(config):
    """(cases, error message or None), cached per session."""
    if "golden" not in _cache:
        try:
            from bilevel_check.golden import load_golden

            groups = config.getini("bilevel_golden_groups") or None
            _cache["golden"] = (load_golden(groups), None)
        except Exception as exc:  # reported in the header and as a skip reason naming the cause
            _cache["golden"] = ([], f"{type(exc).__name__}: {exc}")
    return _cache["golden"]


def pytest_report_header(config):
    from bilevel_check.oracle import DEFAULT_POLICY

    try:
        from bilevel_check.golden import golden_suite_version

        golden = golden_suite_version()
    except Exception as exc:
        golden = f"unavailable ({type(exc).__name__})"
    profile = "not loaded"
    if "hypothesis" in sys.modules:
        from hypothesis import settings

        profile = str(getattr(settings, "_current_profile", None) or "default")
    return (
        f"bilevel-check: tolerance policy v{DEFAULT_POLICY.version}, golden suite {golden}, "
        f"hypothesis profile {profile}"
    )


def pytest_generate_tests(metafunc):
    if "golden_case" not in metafunc.fixturenames:
        return
    cases, err = _golden(metafunc.config)
    if err is not None or not cases:
        reason = f"golden suite unavailable: {err or 'no cases'}"
        metafunc.parametrize(
            "golden_case",
            [pytest.param(None, marks=pytest.mark.skip(reason=reason))],
            ids=["golden-unavailable"],
        )
        return
    metafunc.parametrize("golden_case", cases, ids=[c.id for c in cases])


def _cuda_available() -> tuple[bool, str]:
    if "cuda" not in _cache:
        try:
            import torch

            ok = bool(torch.cuda.is_available())
            _cache["cuda"] = (ok, "torch.cuda.is_available() is False")
        except ImportError as exc:
            _cache["cuda"] = (False, f"torch not importable ({exc})")
    return _cache["cuda"]


@pytest.hookimpl(
    trylast=True
)  # after -k/-m deselection: torch is imported only for selected gpu tests
def pytest_collection_modifyitems(config, items):
    xslow_on = os.environ.get(XSLOW_ENV) == "1"
    ini_expected = None
    for item in items:
        if not xslow_on and item.get_closest_marker("xslow") is not None:
            item.add_marker(pytest.mark.skip(reason=f"xslow test: set {XSLOW_ENV}=1 to run it"))
        if item.get_closest_marker("gpu") is not None:
            ok, why = _cuda_available()
            if not ok:
                item.add_marker(pytest.mark.skip(reason=f"gpu test: no CUDA device ({why})"))
        case = getattr(getattr(item, "callspec", None), "params", {}).get("golden_case")
        if case is None:
            continue
        if ini_expected is None:
            ini_expected = expected_failed_from_ini(config)
        known = dict(ini_expected)
        for mark in item.iter_markers("bilevel_expected_failed"):
            for arg in mark.args:
                known.update(arg)
            known.update(mark.kwargs)
        if case.id in known:
            item.add_marker(
                pytest.mark.xfail(reason=f"known gap {case.id}: {known[case.id]}", strict=False)
            )


@pytest.fixture(scope="session")
def golden_cases(request):
    """All golden cases (the groups of ``bilevel_golden_groups``, default all)."""
    cases, err = _golden(request.config)
    if err is not None:
        pytest.skip(f"golden suite unavailable: {err}")
    return cases


@pytest.fixture(scope="session")
def bilevel_oracle():
    """The :mod:`bilevel_check.oracle` module."""
    from bilevel_check import oracle

    return oracle


@pytest.fixture(scope="session")
def bilevel_strategies():
    """The :mod:`bilevel_check.oracle.strategies` module (hypothesis strategies for MDPs)."""
    import importlib

    return importlib.import_module("bilevel_check.oracle.strategies")


@pytest.fixture(scope="session")
def bilevel_tolerance_policy():
    """The default :class:`~bilevel_check.oracle.TolerancePolicy` (version "2")."""
    from bilevel_check.oracle import DEFAULT_POLICY

    return DEFAULT_POLICY


@pytest.fixture(scope="session")
def bilevel_expected_failed(request):
    """``{case_id: reason}`` from the ``bilevel_expected_failed`` ini option."""
    return expected_failed_from_ini(request.config)
