"""Sweep specs: expansion into cells, stable keys, per-cell seeds, file formats, errors."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from bilevel_check import InvalidInputError
from bilevel_check.sweep.spec import Cell, SweepSpec, load_spec, parse_grid_args, parse_seeds
from bilevel_check.sweep.store import SweepStore


def test_cells_are_the_product_of_the_grid():
    spec = SweepSpec(
        algorithms=["m-sobirl"],
        problems=["garnet", "ranmdp_small"],
        grid={"gamma": [0.5, 0.9], "tau": [0.1, 1.0], "algo.beta": [0.01]},
        seeds="0:3",
        iterations=7,
    )
    cells = spec.cells()
    # 1 algorithm x 2 problems x 2 gamma x 2 tau x 1 beta x 3 seeds, counted by hand
    assert len(cells) == 24
    assert {c.problem for c in cells} == {"garnet", "ranmdp_small"}
    assert {dict(c.params)["gamma"] for c in cells} == {0.5, 0.9}
    assert all(dict(c.options) == {"beta": 0.01} for c in cells)
    assert [c.seed for c in cells[:3]] == [0, 1, 2]
    assert len({c.key for c in cells}) == 24


def test_cell_key_is_sha256_of_the_canonical_json():
    cell = Cell("m-sobirl", "garnet", (("gamma", 0.9),), (), 3, 50)
    # the canonical JSON written out by hand (sorted keys, no spaces), hashed independently
    text = (
        '{"algorithm":"m-sobirl","iterations":50,"options":{},"params":{"gamma":0.9},'
        '"problem":"garnet","seed":3}'
    )
    assert cell.key == hashlib.sha256(text.encode()).hexdigest()[:16]


def test_cell_seed_sequence_depends_on_base_seed_and_key_only():
    a = Cell("m-sobirl", "garnet", (("gamma", 0.9),), (), 3, 50, base_seed=11)
    b = Cell("m-sobirl", "garnet", (("gamma", 0.9),), (), 3, 50, base_seed=11)
    c = Cell("m-sobirl", "garnet", (("gamma", 0.5),), (), 3, 50, base_seed=11)
    key = int(a.key, 16)
    expected = np.random.SeedSequence(11, spawn_key=(key >> 32, key & 0xFFFFFFFF))
    assert a.seed_sequence().generate_state(4).tolist() == expected.generate_state(4).tolist()
    assert a.rng().random(3).tolist() == b.rng().random(3).tolist()
    assert a.rng().random(3).tolist() != c.rng().random(3).tolist()


def test_json_and_toml_specs_give_the_same_cells(tmp_path):
    data = {
        "algorithm": "m-sobirl",
        "problem": ["garnet"],
        "grid": {"gamma": [0.5, 0.9], "S": [5, 8]},
        "seeds": "0:2",
        "iterations": 20,
    }
    (tmp_path / "s.json").write_text(json.dumps(data))
    (tmp_path / "s.toml").write_text(
        'algorithm = "m-sobirl"\nproblem = ["garnet"]\nseeds = "0:2"\niterations = 20\n'
        "[grid]\ngamma = [0.5, 0.9]\nS = [5, 8]\n"
    )
    a, b = load_spec(tmp_path / "s.json"), load_spec(tmp_path / "s.toml")
    assert [c.key for c in a.cells()] == [c.key for c in b.cells()]
    assert len(a.cells()) == 8


def test_grid_shorthand_and_seeds():
    assert parse_grid_args(["gamma=0.5,0.9", "S=10,50", "name=a"]) == {
        "gamma": [0.5, 0.9],
        "S": [10, 50],
        "name": ["a"],
    }
    assert parse_seeds("0:4") == [0, 1, 2, 3]
    assert parse_seeds("3,7") == [3, 7]
    assert parse_seeds(5) == [5]


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"grid": {"gamma": []}}, "grid.gamma"),
        ({"seeds": "5:2"}, "seeds"),
        ({"seeds": [1, 1]}, "seeds"),
        ({"iterations": 0}, "iterations"),
        ({"eps_ladder": [0.1, -1]}, "eps_ladder"),
        ({"algorithms": []}, "algorithm"),
    ],
)
def test_bad_specs_name_the_argument(kwargs, argument):
    base = {"algorithms": ["m-sobirl"], "problems": ["garnet"]}
    with pytest.raises(InvalidInputError, match=argument):
        SweepSpec(**{**base, **kwargs})


def test_unknown_spec_key_suggests_the_closest(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"algorithm": "m-sobirl", "problem": "garnet", "seed": [1]}))
    with pytest.raises(InvalidInputError, match="did you mean 'seeds'"):
        load_spec(path)


def test_store_refuses_to_mix_sweeps(tmp_path):
    spec = SweepSpec(algorithms=["m-sobirl"], problems=["garnet"])
    other = SweepSpec(algorithms=["m-sobirl"], problems=["ranmdp_small"])
    store = SweepStore(tmp_path / "out")
    store.prepare(spec, resume=False, manifest={})
    with pytest.raises(InvalidInputError, match="--resume"):
        store.prepare(spec, resume=False, manifest={})
    with pytest.raises(InvalidInputError, match="the same spec"):
        store.prepare(other, resume=True, manifest={})
    store.prepare(spec, resume=True, manifest={})


def test_shards_round_trip_non_finite_values(tmp_path):
    store = SweepStore(tmp_path)
    store.cells_dir.mkdir()
    store.write_shard(
        "abc", {"cell": "abc", "phi": float("nan"), "g": float("inf")}, {"g": [1.0, float("-inf")]}
    )
    doc = store.read_shards()[0]
    assert np.isnan(doc["row"]["phi"]) and doc["row"]["g"] == np.inf
    assert doc["iterates"]["g"] == [1.0, -np.inf]
    assert not list(tmp_path.glob("cells/.*"))  # no temporary file left behind
