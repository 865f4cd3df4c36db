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


# --- several OOD sources in one sink (issue 16 item 2) ------------------------------------------------------------


@pytest.fixture(scope="module")
def chimeras(shapes_index, tmp_path_factory):
    from stillroom.data.ood_chimera import build_ood_chimera

    return build_ood_chimera(tmp_path_factory.mktemp("chim") / "c", shapes_index, per_split=12, seed=0, probe=False)


def test_single_source_layout_unchanged(shapes_index, ood_only, tmp_path):
    """The original call: paths ``ood/<path>``, groups and recipe as before; hashes recomputed independently."""
    from stillroom._io import sha256_lines

    merged = merge_with_sink(shapes_index, ood_only, tmp_path / "one")
    assert merged.index_hash == sha256_lines([*shapes_index.paths, *("ood/" + p for p in ood_only.paths)])
    assert merged.content_hash == sha256_lines([*shapes_index.sha256, *ood_only.sha256])
    n = len(shapes_index)
    assert merged.groups[n:] == ood_only.groups
    assert merged.recipe["ood_source"] == {
        "root": str(ood_only.root),
        "index_hash": ood_only.index_hash,
        "content_hash": ood_only.content_hash,
        "recipe": ood_only.recipe,
    }
    assert "ood_sources" not in merged.recipe
    assert merged.extra["source"] == ["id"] * n + ["ood"] * len(ood_only)
    assert set(merged.extra["ood_source"][n:]) == {ood_only.root.name} and set(merged.extra["ood_source"][:n]) == {""}
    as_list = merge_with_sink(shapes_index, [ood_only], tmp_path / "list")
    assert as_list.index_hash == merged.index_hash and as_list.recipe == merged.recipe


def test_two_sources_recorded_apart(shapes_index, ood_only, chimeras, tmp_path):
    from stillroom._io import sha256_file

    merged = merge_with_sink(shapes_index, {"drawn": ood_only, "chimera": chimeras}, tmp_path / "two")
    n, k = len(shapes_index), shapes_index.num_classes
    assert merged.num_classes == k + 1 and (merged.labels[n:] == k).all()
    src = merged.extra["ood_source"][n:]
    assert src == ["drawn"] * len(ood_only) + ["chimera"] * len(chimeras)
    assert merged.paths[n:] == [f"ood/drawn/{p}" for p in ood_only.paths] + [f"ood/chimera/{p}" for p in chimeras.paths]
    assert merged.groups[n:] == [f"drawn/{g}" for g in ood_only.groups] + [f"chimera/{g}" for g in chimeras.groups]
    for i in (n, len(merged) - 1):  # the files are the sources' own
        expected = ood_only.sha256[0] if i == n else chimeras.sha256[-1]
        assert merged.sha256[i] == expected == sha256_file(merged.root / merged.paths[i])
    listed = {s["name"]: s for s in merged.meta["ood_sources"]}
    assert listed["chimera"]["index_hash"] == chimeras.index_hash
    assert listed["drawn"]["content_hash"] == ood_only.content_hash
    assert listed["chimera"]["meta"]["audit"]["kept"] == len(chimeras)
    assert listed["chimera"]["recipe"]["ood_kind"] == "chimera"
    assert [s["name"] for s in merged.recipe["ood_sources"]] == ["drawn", "chimera"]
    assert "ood_source" not in merged.recipe
    # names inferred from the recipes when a plain sequence is given
    inferred = merge_with_sink(shapes_index, [ood_only, chimeras], tmp_path / "seq")
    assert set(inferred.extra["ood_source"][n:]) == {ood_only.root.name, "chimera"}


def test_cap_applies_to_the_union(shapes_index, ood_only, chimeras, tmp_path):
    both = {"drawn": ood_only, "chimera": chimeras}
    full = merge_with_sink(shapes_index, both, tmp_path / "full")
    capped = merge_with_sink(shapes_index, both, tmp_path / "cap", ood_train_fraction=0.1, seed=1)
    n_train = len(capped.split_indices("train"))
    ood_train = _ood_rows(capped, "train")
    assert 0 < len(ood_train) <= 0.1 * n_train
    assert len(_ood_rows(full, "train")) > 0.1 * len(full.split_indices("train"))
    for split in ("val", "test"):
        assert len(_ood_rows(capped, split)) == len(_ood_rows(full, split))
    kept = {s["name"]: s["rows_kept"] for s in capped.meta["ood_sources"]}
    assert sum(v["train"] for v in kept.values()) == len(ood_train)


def test_test_only_source_keeps_only_test_rows(shapes_index, ood_only, chimeras, tmp_path):
    merged = merge_with_sink(
        shapes_index, {"drawn": ood_only, "chimera": chimeras}, tmp_path / "loso", test_only=["chimera"]
    )
    n = len(shapes_index)
    rows = [i for i in range(n, len(merged)) if merged.extra["ood_source"][i] == "chimera"]
    assert {merged.splits[i] for i in rows} == {"test"}
    assert len(rows) == int((chimeras.splits == "test").sum())
    drawn = [i for i in range(n, len(merged)) if merged.extra["ood_source"][i] == "drawn"]
    assert len(drawn) == len(ood_only)
    assert merged.meta["merge"]["test_only"] == ["chimera"]
    with pytest.raises(StillroomError, match="test_only"):
        merge_with_sink(shapes_index, {"drawn": ood_only}, tmp_path / "bad", test_only=["emoji"])


def test_refuses_a_source_rendered_differently_and_clashing_names(shapes_index, ood_only, chimeras, tmp_path):
    canon = _with_outline(chimeras, tmp_path / "chim_canon")
    with pytest.raises(StillroomError, match="'chimera'.*outline"):
        merge_with_sink(shapes_index, {"drawn": ood_only, "chimera": canon}, tmp_path / "mixed")
    with pytest.raises(StillroomError, match="both named"):
        merge_with_sink(shapes_index, [chimeras, canon], tmp_path / "clash")
    assert not (tmp_path / "mixed").exists()


def test_cli_old_call_and_repeated_ood(shapes_index, ood_only, chimeras, tmp_path):
    from typer.testing import CliRunner

    from stillroom.cli import app

    old = CliRunner().invoke(app, ["data", "merge-sink", str(shapes_index.root), str(ood_only.root), "--out",
                                   str(tmp_path / "old")])  # fmt: skip
    assert old.exit_code == 0, old.output
    assert (
        load_index(tmp_path / "old").index_hash == merge_with_sink(shapes_index, ood_only, tmp_path / "py").index_hash
    )
    res = CliRunner().invoke(
        app,
        ["data", "merge-sink", str(shapes_index.root), "--ood", f"drawn={ood_only.root}", "--ood", str(chimeras.root),
         "--test-only", "chimera", "--ood-train-fraction", "0.2", "--out", str(tmp_path / "new")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "OOD source chimera (test only)" in res.output
    merged = load_index(tmp_path / "new")
    assert {s["name"] for s in merged.meta["ood_sources"]} == {"drawn", "chimera"}


def test_balanced_cap_shares_the_budget_equally(shapes_index, ood_only, chimeras, tmp_path):
    """Water-filling by hand: 144 ID train rows at 20% allow int(0.2 * 144 / 0.8) = 36 OOD train rows; the smaller
    source (12 chimera train rows, one per group) keeps all 12 < 36 // 2, the other gets the remaining 24."""
    both = {"drawn": ood_only, "chimera": chimeras}
    n_id_train = len(shapes_index.split_indices("train"))
    assert n_id_train == 144 and int((chimeras.splits == "train").sum()) == 12
    assert int((ood_only.splits == "train").sum()) > 24
    bal = merge_with_sink(shapes_index, both, tmp_path / "bal", ood_train_fraction=0.2, balance_sources=True)
    kept = {s["name"]: s["rows_kept"]["train"] for s in bal.meta["ood_sources"]}
    assert kept == {"chimera": 12, "drawn": 24}
    assert bal.meta["merge"]["balance_sources"] is True
    prop = merge_with_sink(shapes_index, both, tmp_path / "prop", ood_train_fraction=0.2)
    kept_prop = {s["name"]: s["rows_kept"]["train"] for s in prop.meta["ood_sources"]}
    assert sum(kept_prop.values()) == 36 and kept_prop["chimera"] < 12  # the union draw favours the bigger pool
