"""A sweep's folder: one atomic JSON shard per finished cell, ``results.parquet``,
``iterates.parquet`` (optional) and ``manifest.json``.

A shard is written only when its cell has finished (with a result or with the error it
raised), by an atomic rename, so an interrupted sweep leaves whole shards or none; the
parquet tables are rebuilt from the shards. Imports ``_io`` and ``spec``; pandas and
pyarrow are imported when a table is written or read.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .._io import atomic_write_bytes, atomic_write_json
from .._validation import InvalidInputError
from .spec import SPEC_SCHEMA, SweepSpec

__all__ = ["SweepStore"]

CELLS = "cells"
RESULTS = "results.parquet"
ITERATES = "iterates.parquet"
MANIFEST = "manifest.json"


def _json_number(v):
    """JSON has no NaN/inf: write them as strings that :func:`_from_json_number` reads back."""
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    return v


def _from_json_number(v):
    if v in ("nan", "inf", "-inf"):
        return float(v)
    return v


class SweepStore:
    """The folder ``out`` of one sweep."""

    def __init__(self, out):
        self.root = Path(out)
        self.cells_dir = self.root / CELLS

    # ------------------------------------------------------------------ set-up and resume
    def prepare(self, spec: SweepSpec, *, resume: bool, manifest: dict) -> None:
        """Create the folder, or check that ``--resume`` continues the same spec.

        Raises:
            InvalidInputError: the folder holds another sweep, or holds this one without
                ``resume`` (never mixes two sweeps, never overwrites finished cells).
        """
        if self.root.exists() and not self.root.is_dir():
            raise InvalidInputError(
                "--out", "a folder (or a path to create)", f"{self.root} is a file"
            )
        old = self.read_manifest()
        if old is not None:
            if not resume:
                raise InvalidInputError(
                    "--out",
                    "a new folder, or --resume to continue the sweep already there",
                    f"{self.root} holds a sweep ({len(self.finished_keys())} cells finished)",
                )
            if old.get("spec") != spec.to_dict():
                raise InvalidInputError(
                    "--resume",
                    "the same spec as the sweep in --out",
                    f"a different spec (the folder holds {old.get('spec')})",
                )
        elif self.root.is_dir() and any(self.root.iterdir()):
            raise InvalidInputError("--out", "a new or empty folder", f"{self.root} is not empty")
        self.cells_dir.mkdir(parents=True, exist_ok=True)
        manifest = dict(manifest, schema=SPEC_SCHEMA, spec=spec.to_dict(), complete=False)
        atomic_write_json(self.root / MANIFEST, manifest)

    def read_manifest(self) -> dict | None:
        path = self.root / MANIFEST
        if not path.is_file():
            return None
        return json.loads(path.read_text())

    def update_manifest(self, **fields) -> None:
        manifest = self.read_manifest() or {}
        manifest.update(fields)
        atomic_write_json(self.root / MANIFEST, manifest)

    # ------------------------------------------------------------------ shards
    def shard_path(self, key: str) -> Path:
        return self.cells_dir / f"{key}.json"

    def finished_keys(self) -> set:
        if not self.cells_dir.is_dir():
            return set()
        return {p.stem for p in self.cells_dir.glob("*.json")}

    def write_shard(self, key: str, row: dict, iterates: dict | None) -> None:
        doc = {
            "row": {k: _json_number(v) for k, v in row.items()},
            "iterates": None
            if iterates is None
            else {k: [_json_number(x) for x in v] for k, v in iterates.items()},
        }
        atomic_write_bytes(self.shard_path(key), (json.dumps(doc) + "\n").encode("utf-8"))

    def read_shards(self) -> list:
        docs = []
        for path in sorted(self.cells_dir.glob("*.json")):
            doc = json.loads(path.read_text())
            doc["row"] = {k: _from_json_number(v) for k, v in doc["row"].items()}
            if doc.get("iterates") is not None:
                doc["iterates"] = {
                    k: [_from_json_number(x) for x in v] for k, v in doc["iterates"].items()
                }
            docs.append(doc)
        return docs

    # ------------------------------------------------------------------ tables
    def write_tables(self, *, order: list | None = None) -> int:
        """Rebuild ``results.parquet`` (and ``iterates.parquet`` when shards carry iterates)
        from the shards, rows in the spec's cell order; returns the number of rows."""
        import pandas as pd

        docs = self.read_shards()
        rows = [d["row"] for d in docs]
        if order is not None:
            rank = {k: i for i, k in enumerate(order)}
            rows.sort(key=lambda r: rank.get(r["cell"], len(rank)))
        atomic_write_bytes(self.root / RESULTS, _parquet_bytes(pd.DataFrame(rows)))
        its = []
        for d in docs:
            if d.get("iterates"):
                n = len(next(iter(d["iterates"].values())))
                for k in range(n):
                    its.append(
                        {
                            "cell": d["row"]["cell"],
                            "k": k,
                            **{c: v[k] for c, v in d["iterates"].items()},
                        }
                    )
        if its:
            atomic_write_bytes(self.root / ITERATES, _parquet_bytes(pd.DataFrame(its)))
        return len(rows)

    def read_results(self):
        import pandas as pd

        path = self.root / RESULTS
        if not path.is_file():
            raise InvalidInputError("DIR", f"a sweep folder holding {RESULTS}", str(self.root))
        return pd.read_parquet(path)

    def read_iterates(self):
        import pandas as pd

        path = self.root / ITERATES
        return pd.read_parquet(path) if path.is_file() else None


def _parquet_bytes(frame) -> bytes:
    import io

    buf = io.BytesIO()
    frame.to_parquet(buf, engine="pyarrow", index=False)
    return buf.getvalue()
