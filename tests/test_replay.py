"""Augmentation replay (issue 7): teacher logits of V augmented views per sample, looked up by (row, view).

The views are re-created from (augment seed, row, view) alone, so replayed logits must equal the online teacher's
logits on the very image the student trains on: up to float32 batch-composition noise for a float32 store, and up
to float16 rounding (half an ulp, < 1e-2 for |logit| < 32) for a float16 store.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stillroom._io import StillroomError
from stillroom.config import config_from_dict
from stillroom.data.augment import get_augment
from stillroom.data.dataset import IndexDataset, load_images
from stillroom.distill.teachers import CachedTeachers, OnlineTeachers
from stillroom.pipeline import train
from stillroom.softlabels.check import check_alignment
from stillroom.softlabels.export import export_softlabels
from stillroom.softlabels.store import SoftLabelStore, teacher_logits_for, write_store

VIEWS = 3


@pytest.fixture(scope="module")
def replay_store(teacher_run, shapes_index, tmp_path_factory):
    out = tmp_path_factory.mktemp("replay") / "store"
    return export_softlabels(teacher_run, shapes_index.root, out, views=VIEWS, augment="silhouette", augment_seed=0)


def _student_batch(index, seed: int, epoch: int, n: int = 48):
    """What the trainer's loader serves for the first ``n`` train rows in replay mode at ``epoch``."""
    images = load_images(index)
    rows = index.split_indices("train")[:n]
    ds = IndexDataset(images, index.labels, rows, get_augment("silhouette", index.recipe), seed, VIEWS, draw_seed=5)
    ds.set_view(epoch)
    items = [ds[k] for k in range(len(ds))]
    x = torch.stack([it[0] for it in items])  # (B, C, S, S) uint8, augmented
    return x, torch.tensor([it[2] for it in items]), torch.tensor([it[3] for it in items]), images


@pytest.mark.parametrize("dtype, atol", [("float32", 1e-5), ("float16", 1e-2)])
def test_replayed_logits_equal_online_teacher_on_the_same_view(
    teacher_run, shapes_index, replay_store, tmp_path, dtype, atol
):
    store = replay_store
    if dtype == "float16":
        store = export_softlabels(
            teacher_run, shapes_index.root, tmp_path / "fp16", dtype="float16", views=VIEWS, augment_seed=0
        )  # augment "auto" resolves to the silhouette recipe of this index
    assert store.views == VIEWS and store.logits.shape == (VIEWS, len(shapes_index), 4)
    assert store.manifest["augment"] == "silhouette" and store.manifest["augment_seed"] == 0
    assert store.manifest["build_seconds"] > 0 and store.manifest["logits_bytes"] > store.logits.nbytes
    x, rows, views, images = _student_batch(shapes_index, seed=0, epoch=2)
    assert len(set(views.tolist())) == VIEWS  # the batch mixes views
    assert not torch.equal(x, torch.from_numpy(np.asarray(images[rows.numpy()])))  # and they are augmented
    cached = CachedTeachers([store.path], shapes_index)
    online = OnlineTeachers([teacher_run], shapes_index)
    replayed, exact = cached(x, rows, views), online(x, rows)
    assert float(exact.abs().max()) < 32  # keeps float16 rounding below the tolerance
    torch.testing.assert_close(replayed, exact, atol=atol, rtol=0)
    # Another view of the same rows is a different image: the lookup really depends on the view.
    assert not torch.allclose(cached(x, rows, (views + 1) % VIEWS), exact, atol=1e-3)


def test_view_draw_is_a_function_of_seed_epoch_row(shapes_index):
    _, rows, v1, _ = _student_batch(shapes_index, seed=0, epoch=1)
    _, _, v1b, _ = _student_batch(shapes_index, seed=0, epoch=1)
    _, _, v2, _ = _student_batch(shapes_index, seed=0, epoch=2)
    assert torch.equal(v1, v1b) and not torch.equal(v1, v2)
    assert int(v1.min()) >= 0 and int(v1.max()) < VIEWS


def test_student_trains_from_a_replay_store(replay_store, shapes_index, tmp_path, tiny_config):
    raw = tiny_config(
        shapes_index.root,
        "replay",
        epochs=2,
        augment="silhouette",
        loss={"name": "kd", "params": {"kd_weight": 0.5, "temperature": 4.0}},
        teachers={"cached": [str(replay_store.path)]},
    )
    run = train(config_from_dict(raw), tmp_path / "replay")
    report = json.loads((run / "alignment_check.json").read_text())
    assert report["ok"] is True and report["views"] == VIEWS and report["replay_equal"] is True
    assert report["stores"][0]["views"] == VIEWS and report["stores"][0]["augment"] == "silhouette"
    history = json.loads((run / "state.json").read_text())["history"]
    assert len(history) == 2 and all(np.isfinite(h["loss_kd"]) for h in history)


@pytest.mark.parametrize(
    "change, match",
    [({"seed": 1}, "augment_seed"), ({"augment": "rgb"}, "augment"), ({"teachers_replay_seed": 3}, "augment_seed")],
)
def test_a_store_of_other_views_is_refused(replay_store, shapes_index, tmp_path, tiny_config, change, match):
    extra = {"augment": "silhouette", **change}
    teachers = {"cached": [str(replay_store.path)]}
    if "teachers_replay_seed" in extra:
        teachers["replay_seed"] = extra.pop("teachers_replay_seed")
    raw = tiny_config(shapes_index.root, "bad", epochs=1, loss={"name": "kd", "params": {}}, teachers=teachers)
    raw.update(extra)
    with pytest.raises(StillroomError, match=f"replay mismatch: {match}"):
        train(config_from_dict(raw), tmp_path / "bad")
    assert not (tmp_path / "bad" / "last.safetensors").exists()


def test_stores_must_agree_on_views(shapes_index, tmp_path):
    n = len(shapes_index)
    rng = np.random.default_rng(0)
    teacher = {"arch": "x", "weights_sha256": "0" * 64}
    plain = write_store(tmp_path / "plain", rng.normal(size=(n, 4)), shapes_index, teacher, {})
    a = rng.normal(size=(2, n, 4)).astype(np.float32)
    rep = write_store(tmp_path / "rep", a, shapes_index, teacher, {}, replay={"augment": "none", "augment_seed": 4})
    assert SoftLabelStore.open(rep.path).views == 2 and plain.views == 0
    got = teacher_logits_for([rep], np.array([3, 5]), np.array([1, 0]))
    np.testing.assert_array_equal(got.numpy()[0], np.stack([a[1, 3], a[0, 5]]))
    with pytest.raises(StillroomError, match="pass views"):
        teacher_logits_for([rep], np.array([3]))
    with pytest.raises(StillroomError, match="views must be in"):
        teacher_logits_for([rep], np.array([3]), np.array([2]))
    report = check_alignment([plain, rep], shapes_index)
    assert report["ok"] is False and report["replay_equal"] is False
    with pytest.raises(StillroomError, match="3-D"):
        write_store(tmp_path / "bad", a[0], shapes_index, teacher, {}, replay={"augment": "none", "augment_seed": 4})


def _geometry_pair(index, seed: int, n: int = 64):
    """``restyle`` and ``restyle_geometry`` views of the first ``n`` train rows, each from the same generators."""
    from stillroom.data.augment import augment_batch, augment_rng

    images = load_images(index)
    rows = index.split_indices("train")[:n]
    x = torch.from_numpy(np.asarray(images[rows]))
    views = [
        augment_batch(get_augment(name, index.recipe), x, [augment_rng(seed, int(r), 1) for r in rows])
        for name in ("restyle", "restyle_geometry")
    ]
    return x, views[0], views[1]


def test_geometry_view_is_the_students_view_before_its_style_change(shapes_index):
    from stillroom.data.augment import _draw_geometry, _draw_shape

    for s in range(50):  # same draws: same rotation, shift, flip and erasing; no stroke or rendering change
        a = _draw_shape(np.random.default_rng(s), 64, 64, geometry=False)
        g = _draw_geometry(np.random.default_rng(s), 64, 64)
        assert (g.angle, g.translate, g.flip, g.box) == (a.angle, a.translate, a.flip, a.box)
        assert g.thick_px == 0 and g.render_side == 0 and g.deform is None
    x, student, teacher = _geometry_pair(shapes_index, seed=0)
    assert not torch.equal(student, teacher) and not torch.equal(teacher, x)
    # where the student's view draws no style change the two views are the very same image
    from stillroom.data.augment import augment_rng

    rows = shapes_index.split_indices("train")[: len(x)]
    h = x.shape[-1]
    plain = [
        i
        for i, r in enumerate(rows)
        if (lambda v: v.thick_px == 0 and v.render_side == 0)(_draw_shape(augment_rng(0, int(r), 1), h, h, False))
    ]
    assert 0 < len(plain) < len(rows)
    assert torch.equal(student[plain], teacher[plain])
    changed = sorted(set(range(len(rows))) - set(plain))
    assert any(not torch.equal(student[i], teacher[i]) for i in changed)


def test_student_trains_on_targets_of_the_geometry_view(teacher_run, shapes_index, tmp_path, tiny_config):
    store = export_softlabels(
        teacher_run, shapes_index.root, tmp_path / "geo", views=2, augment="restyle_geometry", augment_seed=0
    )
    assert store.manifest["augment"] == "restyle_geometry"
    base = {"epochs": 1, "augment": "restyle", "loss": {"name": "kd", "params": {}}}
    raw = tiny_config(
        shapes_index.root, "geo", teachers={"cached": [str(store.path)], "replay_view": "geometry"}, **base
    )
    run = train(config_from_dict(raw), tmp_path / "geo_run")
    report = json.loads((run / "alignment_check.json").read_text())
    assert report["ok"] is True and report["replay"]["augment"] == "restyle_geometry"
    # the same store for a student that expects the teacher to have seen its own view: refused
    raw = tiny_config(shapes_index.root, "same", teachers={"cached": [str(store.path)]}, **base)
    with pytest.raises(StillroomError, match="replay mismatch: augment"):
        train(config_from_dict(raw), tmp_path / "same_run")
    # a view the student does not see needs a store that holds it
    plain = export_softlabels(teacher_run, shapes_index.root, tmp_path / "plain")
    raw = tiny_config(
        shapes_index.root, "nv", teachers={"cached": [str(plain.path)], "replay_view": "geometry"}, **base
    )
    with pytest.raises(StillroomError, match="replay stores only"):
        train(config_from_dict(raw), tmp_path / "nv_run")
    # a recipe without style changes has no geometry view
    raw = tiny_config(
        shapes_index.root,
        "sil",
        teachers={"cached": [str(store.path)], "replay_view": "geometry"},
        **{**base, "augment": "silhouette"},
    )
    with pytest.raises(StillroomError, match="recipe with style changes"):
        train(config_from_dict(raw), tmp_path / "sil_run")
