"""The certified golden suite: read and validate it (:mod:`.store`), build its cases
(:mod:`.generators`) and certify them (:mod:`.certify`).

May import the core modules and ``routes``; never ``oracle`` or ``cli``.
"""

from .store import (
    GOLDEN_SCHEMA,
    MANIFEST_SCHEMA,
    GoldenCase,
    GoldenError,
    format_table,
    golden_case_file,
    golden_suite_version,
    group_table,
    load_golden,
    load_manifest,
    reference_root,
    significant_digits,
)

__all__ = [
    "GOLDEN_SCHEMA",
    "MANIFEST_SCHEMA",
    "GoldenError",
    "GoldenCase",
    "golden_case_file",
    "load_golden",
    "load_manifest",
    "golden_suite_version",
    "reference_root",
    "significant_digits",
    "group_table",
    "format_table",
]
