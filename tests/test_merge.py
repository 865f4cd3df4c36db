"""`data merge-sink --ood-train-fraction`: the OOD share of train rows is capped by dropping whole OOD groups, val and
test keep every OOD row, and the choice is seeded."""

from __future__ import annotations

import shutil

import pytest

from stillroom._io import StillroomError
from stillroom.data.index import load_index, update_index_meta
from stillroom.data.merge import merge_with_sink
from stillroom.data.outline import Outline


def _ood_rows(index, split):
    rows = index.split_indices(split)
    return rows[index.labels[rows] == index.num_classes - 1]


def test_cap_keeps_eval_splits_and_drops_whole_groups(shapes_index, ood_only, tmp_path):
    full = merge_with_sink(shapes_index, ood_only, tmp_path / "full")
    capped = merge_with_sink(shapes_index, ood_only, tmp_path / "capped", ood_train_fraction=0.1, seed=3)
    n_train = len(capped.split_indices("train"))
    n_ood_train = len(_ood_rows(capped, "train"))
    assert 0 < n_ood_train <= 0.1 * n_train < len(_ood_rows(full, "train"))
    for split in ("val", "test"):  # evaluation rows untouched
        assert [capped.paths[i] for i in _ood_rows(capped, split)] == [full.paths[i] for i in _ood_rows(full, split)]
    dropped = set(capped.meta["merge"]["ood_train_groups_dropped"])
    kept_groups = {capped.groups[i] for i in _ood_rows(capped, "train")}
    full_train_groups = {full.groups[i] for i in _ood_rows(full, "train")}
    assert dropped and not dropped & kept_groups and dropped | kept_groups == full_train_groups
    again = merge_with_sink(shapes_index, ood_only, tmp_path / "again", ood_train_fraction=0.1, seed=3)
    assert again.index_hash == capped.index_hash


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_fraction_out_of_range(shapes_index, ood_only, tmp_path, fraction):
    with pytest.raises(StillroomError, match="ood_train_fraction"):
        merge_with_sink(shapes_index, ood_only, tmp_path / "bad", ood_train_fraction=fraction)


def _with_outline(index, dst):
    """A copy of ``index`` whose recipe says it was rendered with the canonical outline (files unchanged)."""
    shutil.copytree(index.root, dst)
    return update_index_meta(dst, recipe={**index.recipe, "outline": Outline().recipe()})


def test_merge_refuses_mixed_outlines_and_keeps_a_shared_one(shapes_index, ood_only, tmp_path):
    """Issue 16: a canonically rendered side merged with a plain one would bring the rendering gap back."""
    canon_ood = _with_outline(ood_only, tmp_path / "ood_canon")
    with pytest.raises(StillroomError, match="outline"):
        merge_with_sink(shapes_index, canon_ood, tmp_path / "mixed")
    with pytest.raises(StillroomError, match="outline"):
        merge_with_sink(_with_outline(shapes_index, tmp_path / "id_canon"), ood_only, tmp_path / "mixed2")
    merged = merge_with_sink(load_index(tmp_path / "id_canon"), canon_ood, tmp_path / "both")
    assert merged.recipe["outline"] == Outline().recipe()
    assert "outline" not in merge_with_sink(shapes_index, ood_only, tmp_path / "plain").recipe
