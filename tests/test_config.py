"""The config file: values of the wrong kind are refused, not converted in silence."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.config import load_config
from recsys.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[walks]\nboost = "yes"', "[walks.boost] Input should be a valid boolean (seen: 'yes')"),
        ("[recommend]\nn = true", "[recommend.n] Input should be a valid integer (seen: True)"),
        ("[similarity]\nk = 5.0", "[similarity.k] Input should be a valid integer (seen: 5.0)"),
        ('[ranker]\nnum_trees = "10"', "[ranker.num_trees] Input should be a valid integer"),
        ('[evaluation]\nks = [5, "10"]', "[evaluation.ks.1] Input should be a valid integer"),
        ("[ranker]\nnum_treez = 10", "[ranker.num_treez] unknown key"),
        ("ranker = 5", "[ranker] must be a section of keys, not a value (seen: 5)"),
    ],
)
def test_a_value_of_the_wrong_kind_is_named_with_its_key(tmp_path, text, expected):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


def test_an_integer_stands_for_a_float_and_arrays_become_tuples(tmp_path):
    path = tmp_path / "good.toml"
    path.write_text('[feedback]\nlike_weight = 4\n[evaluation]\nks = [5, 10]\n'
                    '[curation]\nblock_tracks = ["t1"]\n')
    cfg = load_config(path)
    assert cfg.feedback.like_weight == 4.0 and isinstance(cfg.feedback.like_weight, float)
    assert cfg.evaluation.ks == (5, 10)
    assert cfg.curation.block_tracks == ("t1",)


@pytest.mark.parametrize("name", ["hetrec.toml", "movielens.toml"])
def test_the_shipped_configs_load(name):
    load_config(Path(__file__).parent.parent / "configs" / name)
