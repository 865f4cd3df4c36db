"""The one training loop, for teachers and students alike.

What varies between a teacher, a scratch student and a distilled student is only configuration: the model name,
the loss and where teacher logits come from (none, cached stores, online runs). This layer does not know losses or
teachers: the caller passes an ``objective`` that builds both from the config (``distill.objective``), and an
``on_finished`` hook that evaluates the finished run (``evaluate.runner``); ``stillroom.pipeline.train`` wires the
two, so ``train`` imports nothing above it (import-linter contract in pyproject.toml).

Per epoch: shuffle with a generator seeded by (seed, epoch); every sample's augmented view is a function of
(seed, row, epoch) (``data.augment``); SGD/AdamW with linear warm-up then cosine decay per step. Evaluation works
on a copy of the model whose BatchNorm statistics are re-estimated on clean training images (``precise_bn``), so
evaluating never changes the training trajectory. Model selection uses the validation split only; test metrics of
both the best-validation and the last-epoch weights are written at the end (REFERENCE 6: mdistiller selects on
test, we do not). A K+1 open-set model (merged index, class K = sink; seed 000 §2.4) is selected on the ID val rows
only: top-1 with the argmax over all K+1 outputs (a sink prediction on an ID row is an error), ties by ID NLL; the
epoch log adds ``val_id_top1``, ``val_id_nll`` and ``val_ood_rejection``. ``resume=True`` continues from the last
finished epoch with identical results.

Augmentation replay (issue 7): with cached stores that hold V augmented views per row, each sample's view is drawn
per epoch from [0, V) as a function of (seed, epoch, row), the image is re-created with the store's augment seed,
and the teacher logits of exactly that view are looked up (``data.dataset.IndexDataset``).

Mixed batches (``mix``: CutMix or mixup, ``data.mix.mix_batch``): drawn per batch from a generator seeded by
(seed, epoch), before the teachers, so online teachers score the mixed image (function matching); the loss is the
pixel-share-weighted sum of the loss with each image's label (label-free terms such as KD come out unchanged).

Sharpness-aware minimization (``optim.sam_rho`` > 0, ``train.sam``): after the backward pass the weights move to
the worst point within radius rho, the batch is run again there (BatchNorm statistics untouched), and the optimizer
steps from the original weights with that second gradient; off by default.

Progressive resizing (``schedule.progressive``): the first epochs train on the views reduced to a smaller side
(``data.augment.downscale``); teachers (online or replayed) score the full-size view; validation, precise BN and
the saved weights use the data's size.

Several processes (``torchrun --nproc_per_node=N -m stillroom train CONFIG``; WORLD_SIZE > 1): one process group
(nccl on GPU, gloo on CPU), the model wrapped in DistributedDataParallel (gradients all-reduced, i.e. averaged over
ranks), and ``GlobalBatchSampler``: the epoch permutation is the single-process one, cut into global batches of
``batch_size``, and rank r trains on the r-th contiguous shard of each. Since every rank's shard has the same size,
the mean of the per-rank mean losses is the global-batch mean loss, so N processes follow the single-process run up
to float reduction order (models without BatchNorm; SyncBatchNorm is used on GPU only, torch has no CPU kernel for
it). Rank 0 alone writes files (checkpoints, state, logs, metrics) and evaluates.

Why one module of over 400 lines: the one training loop (STYLE: one loop for every run); DDP, resume and BN-correct
evaluation copies are parts of the same epoch and state, and splitting them would scatter the resume logic.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from sklearn.metrics import f1_score
from torch import distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader

from stillroom import __version__
from stillroom._io import StillroomError, atomic_write_json, atomic_write_text, read_json
from stillroom.config import TrainConfig, config_from_dict
from stillroom.data.augment import augment_name, downscale, get_augment, teacher_view
from stillroom.data.dataset import IndexDataset, Normalizer, load_images
from stillroom.data.index import IGNORE_INDEX, TRANSFER, DatasetIndex, load_index
from stillroom.data.mix import mix_batch
from stillroom.data.species_names import display_names
from stillroom.models.factory import create_model
from stillroom.models.features import FeatureTap, attach_feature_tap, feature_dim
from stillroom.models.heads import HeadBank, attach_heads, head_bank, heads_arch
from stillroom.models.inference import predict_logits
from stillroom.models.mixstyle import attach_mixstyle
from stillroom.models.pretrained import load_pretrained
from stillroom.models.small_maps import use_small_map_convs
from stillroom.runs import index_sink
from stillroom.train import sam
from stillroom.train.checkpoint import load_training_state, save_training_state, save_weights
from stillroom.train.precise_bn import canonical_bn_rows, recompute_bn_on_rows
from stillroom.train.sampling import ClassBatchSampler, GlobalBatchSampler

__all__ = ["train", "config_differs", "Progress", "Objective", "OnFinished", "GlobalBatchSampler"]

Progress = Callable[..., None]  # (phase, done, total, record=None); record: the epoch's log line
#: (cfg, index, alignment_json or None, replay {"augment", "augment_seed"}) -> (loss module, teachers or None).
#: The loss is called as loss(student_logits, teacher_logits or None, target, epoch=e) -> {term name: tensor}, with
#: features=(B, D), the student's pooled features, where it ``needs_features``; its optional ``num_outputs(
#: num_classes, sink_class)`` gives the student's output count from the index's class count and its sink class
#: (None without one): K for outlier exposure on a merged index. Teachers are called as
#: teachers(x, rows, views or None) -> (M, B, K) logits and may carry ``views`` (replay stores).
Objective = Callable[[TrainConfig, DatasetIndex, "Path | None", dict[str, Any]], tuple[nn.Module, Any]]
#: (run_dir, index, images): called on rank 0 once the last epoch is saved, e.g. to write metrics.json
OnFinished = Callable[[Path, DatasetIndex, np.ndarray], None]


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def _use_bf16(amp: str, device: torch.device) -> bool:
    """bfloat16 autocast for the training step? float16 would need a GradScaler against underflowing gradients, so
    only bfloat16: on a GPU that has it (``auto`` or ``bf16``), on a CPU only when asked (``bf16``) and only with
    native bfloat16 units (AMX or AVX512-BF16; emulated bfloat16 is slower than float32). Elsewhere float32."""
    if amp == "off":
        return False
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if amp != "bf16" or device.type != "cpu":
        return False
    # private probes of torch.cpu (no public one yet); a torch without them counts as no native bfloat16
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, f, lambda: False)()) for f in probes)


class _Dist:
    """The process group of a torchrun launch (WORLD_SIZE > 1), or a single process."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.owned = False
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
            self.owned = True
        self.rank = dist.get_rank() if self.world > 1 else 0
        self.main = self.rank == 0
        if torch.cuda.is_available():
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if self.world > 1 else 0)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64, on the backend's device)."""
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def close(self) -> None:
        if self.owned:
            dist.destroy_process_group()


class _PlainBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Stand-in for a SyncBatchNorm in the rank-0 evaluation copy: plain per-process statistics (the input rank is
    whatever the original BatchNorm had, so no dimension check)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        pass


def _unsync_bn(module: nn.Module) -> nn.Module:
    """Replace SyncBatchNorm layers (in place) so re-estimating statistics on rank 0 alone cannot wait on peers."""
    for name, child in module.named_children():
        if isinstance(child, nn.SyncBatchNorm):
            plain = _PlainBatchNorm(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            plain.load_state_dict(child.state_dict())
            setattr(module, name, plain.to(next(child.buffers(), torch.empty(0)).device))
        else:
            _unsync_bn(child)
    return module


def _resolved_params(loss_fn: nn.Module) -> dict[str, Any] | None:
    params = getattr(loss_fn, "params", None)
    return params.resolved() if hasattr(params, "resolved") else None


def _lr_lambda(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    total = cfg.schedule.epochs * steps_per_epoch
    warmup = int(round(cfg.schedule.warmup_epochs * steps_per_epoch))
    floor = cfg.schedule.min_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _optimizer(cfg: TrainConfig, model: nn.Module, loss_fn: nn.Module | None = None) -> torch.optim.Optimizer:
    # No weight decay on norms and biases: standard for both CNNs and ViTs. A loss's own weights (supcon's projection
    # head) train with the model under the same rules.
    decay, no_decay = [], []
    params = [*model.parameters(), *(loss_fn.parameters() if loss_fn is not None else ())]
    for p in params:
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optim.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.optim.lr, momentum=cfg.optim.momentum, nesterov=cfg.optim.nesterov)
    return torch.optim.AdamW(groups, lr=cfg.optim.lr)


def _forward_loss(
    model: nn.Module,
    loss_fn: nn.Module,
    batch: tuple,
    device: torch.device,
    use_amp: bool,
    tap: FeatureTap | None = None,
    bank: HeadBank | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """One training batch through the model and the loss: (logits, loss terms, their sum). Mixed batches take
    both labels by pixel share (label-free terms such as KD are the same in both calls). ``tap``: the student's
    pooled features, for a loss that ``needs_features``; ``bank``: the student's heads, one per teacher."""
    xn, t_logits, y, partner, lam, labelled, epoch = batch
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
        logits = model(xn)
    ctx: dict[str, Any] = {"epoch": epoch} if tap is None else {"epoch": epoch, "features": tap.pooled()}

    def loss_terms(labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if bank is None:
            return loss_fn(logits.float(), t_logits, labels, **ctx)
        # Hydra (models/heads.py): head m against teacher m alone, every term averaged over the heads
        heads = bank.last_heads()
        per_head = [
            loss_fn(heads[m], None if t_logits is None else t_logits[m : m + 1], labels, **ctx)
            for m in range(bank.num_heads)
        ]
        return {k: sum(h[k] for h in per_head) / bank.num_heads for k in per_head[0]}

    terms = loss_terms(y)
    if lam < 1.0:
        other = loss_terms(y[partner])
        terms = {k: lam * v + (1.0 - lam) * other[k] for k, v in terms.items()}
    if not bool(labelled.any()):  # a batch of transfer rows only: the CE mean is 0/0
        terms = {k: v if torch.isfinite(v) else torch.zeros_like(v) for k, v in terms.items()}
    return logits, terms, sum(terms.values())


def _bn_rows(index: DatasetIndex, cfg: TrainConfig) -> np.ndarray:
    """Clean train rows for BN statistics, in the canonical order (sorted, subsampled, permuted by the seed)."""
    return canonical_bn_rows(index.split_indices(cfg.data.train_split), cfg.precise_bn.max_images, cfg.seed)


def _weight_average(cfg: TrainConfig, net: nn.Module, steps_per_epoch: int) -> AveragedModel | None:
    """The EMA of ``net``'s weights the config asks for (``ema``), or None. Buffers are not averaged: evaluation
    copies re-estimate BatchNorm statistics for the averaged weights (``precise_bn``, required by the config)."""
    if not cfg.ema.enabled:
        return None
    decay = 0.5 ** (1.0 / (cfg.ema.half_life * steps_per_epoch))
    return AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)


def evaluation_copy(
    model: nn.Module, normalizer: Normalizer, images: np.ndarray, bn_rows: np.ndarray, cfg: TrainConfig
) -> nn.Module:
    """A deep copy in eval mode with BN statistics re-estimated on clean training images (when enabled)."""
    clone = _unsync_bn(copy.deepcopy(model))
    if cfg.precise_bn.enabled:
        recompute_bn_on_rows(clone, normalizer, images, bn_rows, cfg.batch_size, seed=cfg.seed)
    return clone.eval()


def _split_report(
    model: nn.Module,
    normalizer: Normalizer,
    images: np.ndarray,
    index: DatasetIndex,
    split: str,
    sink: int | None = None,
) -> dict[str, Any]:
    """Metrics of ``split`` over its rows (every row the model has a column for); with ``sink`` (= K, the sink class of
    a merged index) also the ID-only selection metrics (seed 000 §2.4; REFERENCE 6): ``id_top1`` and ``id_nll`` on the
    rows labelled < K with the argmax / softmax over all the model's outputs, so for a K+1 model a sink prediction on an
    ID row counts as an error (the deployed model answers over K+1 classes; dropping the sink column would hide false
    rejections), and ``ood_rejection`` = share of the sink-labelled rows whose argmax is the sink (None without such
    rows, or for a K-class model, which has no sink column: all its metrics are over the ID rows, the only ones it can
    label)."""
    rows = index.split_indices(split)
    if len(rows) == 0:
        raise StillroomError(f"{index.root}: split {split!r} is empty")
    logits = predict_logits(model, normalizer, images, rows)
    labels = index.labels[rows]
    # every row, but the OOD rows of a K-class model on a merged index, which it has no column for
    labelled = labels < logits.shape[1]
    z, y = logits[labelled], labels[labelled]
    # the selection metrics only (evaluate.metrics.classification_report has the full report, same definitions):
    # top-1, and macro-F1 over the classes present in the split
    present = np.unique(y)
    report: dict[str, Any] = {
        "top1": float((z.argmax(axis=1) == y).mean()),
        "macro_f1": float(f1_score(y, z.argmax(axis=1), labels=present, average="macro", zero_division=0)),
    }
    report["nll"] = float(torch.nn.functional.cross_entropy(torch.from_numpy(z), torch.from_numpy(y)).item())
    if sink is not None:
        is_id = labels < sink
        if not is_id.any():
            raise StillroomError(f"{index.root}: split {split!r} has no in-distribution rows to select a model on")
        z, y = torch.from_numpy(logits[is_id]), torch.from_numpy(labels[is_id])
        report["id_top1"] = float((logits[is_id].argmax(axis=1) == labels[is_id]).mean())
        report["id_nll"] = float(torch.nn.functional.cross_entropy(z, y).item())
        has_sink = logits.shape[1] > sink
        report["ood_rejection"] = (
            float((logits[~is_id].argmax(axis=1) == sink).mean()) if (~is_id).any() and has_sink else None
        )
    return report


def config_differs(cfg: TrainConfig, out_dir: Path) -> bool:
    """True when ``out_dir/config.json`` exists and holds another config than ``cfg`` (its resolved JSON form)."""
    saved = out_dir / "config.json"
    if not saved.is_file():
        return False
    # compared after filling defaults, so a field added to TrainConfig since (with the old behaviour as its
    # default, e.g. ``mix``) does not make a finished run look different
    try:
        before = json.loads(config_from_dict(read_json(saved)).model_dump_json())
    except StillroomError:
        return True
    return before != json.loads(cfg.model_dump_json())


def _prepare_run_dir(cfg: TrainConfig, out_dir: Path, resume: bool, write: bool = True) -> bool:
    """Validate (and with ``write``, create) the run directory; True when there is a finished epoch to resume."""
    resumable = (out_dir / "last.safetensors").is_file()
    if out_dir.exists() and any(out_dir.iterdir()):
        if not resume:
            raise StillroomError(f"{out_dir}: a run already exists here; pass --resume to continue it or pick --out")
        if config_differs(cfg, out_dir):
            raise StillroomError(f"{out_dir}: --resume with a different config than the one saved in config.json")
    if not write:
        return resumable
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "config.json", json.loads(cfg.model_dump_json()))
    atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False))
    return resumable


def _transfer_rows(index: DatasetIndex, cfg: TrainConfig, loss_fn: nn.Module, teachers: Any) -> np.ndarray:
    """The index's transfer rows this run learns from (``data.transfer``; ``data.transfer.add_transfer_rows``): all
    of them for a distilled run whose loss learns from rows without a class, none for a run without teachers (it has
    no target for them) or with ``data.transfer: false``."""
    rows = index.split_indices(TRANSFER)
    if not len(rows) or not cfg.data.transfer or teachers is None:
        return rows[:0]
    if not getattr(loss_fn, "learns_unlabelled", False):
        raise StillroomError(
            f"{cfg.name}: loss {cfg.loss.name!r} reads the class of every row and the {len(rows)} transfer rows of "
            f"{index.root} have none; use kd, luminet or logit_mse, or set data.transfer: false"
        )
    return rows


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: Progress | None = None,
    *,
    objective: Objective,
    on_finished: OnFinished | None = None,
) -> Path:
    """Train ``cfg`` into ``out_dir`` with the loss and teachers ``objective`` builds; return the run directory.
    See the module docstring; ``stillroom.pipeline.train`` is the entry point that also evaluates the run.

    Under torchrun (WORLD_SIZE > 1) every process calls this; only rank 0 writes, reports ``progress`` and calls
    ``on_finished``.
    """
    ddp = _Dist()
    try:
        return _train(cfg, Path(out_dir), resume, progress if ddp.main else None, ddp, objective, on_finished)
    finally:
        ddp.close()


def _train(
    cfg: TrainConfig,
    out_dir: Path,
    resume: bool,
    progress: Progress | None,
    ddp: _Dist,
    objective: Objective,
    on_finished: OnFinished | None,
) -> Path:
    index = load_index(cfg.data.index)
    # Every rank validates the directory before rank 0 writes into it.
    resumable = _prepare_run_dir(cfg, out_dir, resume, write=ddp.world == 1)
    if ddp.world > 1:
        ddp.barrier()
        if ddp.main:
            _prepare_run_dir(cfg, out_dir, resume)
    _seed_everything(cfg.seed, cfg.deterministic)
    device = ddp.device
    use_amp = _use_bf16(cfg.amp, device)
    recipe = index.recipe
    channels, size = int(recipe.get("channels", 1)), int(recipe["size"])

    aug_name = augment_name(cfg.augment, recipe)
    replay_seed = cfg.seed if cfg.teachers.replay_seed is None else cfg.teachers.replay_seed
    loss_fn, teachers = objective(
        cfg,
        index,
        out_dir / "alignment_check.json" if ddp.main else None,
        {"augment": teacher_view(aug_name, cfg.teachers.replay_view), "augment_seed": replay_seed},
    )
    replay_views = int(getattr(teachers, "views", 0))
    if cfg.teachers.replay_view != "same" and (not replay_views or cfg.teachers.online):
        raise StillroomError(
            f"{cfg.name}: teachers.replay_view {cfg.teachers.replay_view!r} needs replay stores only (cached "
            "stores exported with --views V, no online teachers): only a store holds a view the student does not see"
        )

    sink_class = index_sink(index)
    num_classes = int(getattr(loss_fn, "num_outputs", lambda k, _sink: k)(index.num_classes, sink_class))
    net = create_model(cfg.model.name, channels, num_classes, size)
    if cfg.model.pretrained and not resumable:  # a resumed run's checkpoint replaces every weight anyway
        load_pretrained(net, cfg.model.name, channels)
    # after the ImageNet weights: those know one head only
    attach_heads(net, cfg.model.heads, num_classes, cfg.model.head_depth)
    bank = head_bank(net)
    if cfg.model.mixstyle is not None:  # hooks, not modules: the weights stay the plain architecture's
        ms = cfg.model.mixstyle
        attach_mixstyle(net, ms.layers, ms.p, ms.alpha)
    # a loss on the student's features (supcon, similarity) reads them from a hook on the last feature map
    # (models.features)
    tap = attach_feature_tap(net) if getattr(loss_fn, "needs_features", False) else None
    if tap is not None:  # a term with weights of its own builds them now that their input width is known
        loss_fn.bind_features(feature_dim(net), cfg.seed)
    loss_fn = loss_fn.to(device)
    loss_weights = [p for p in loss_fn.parameters() if p.requires_grad]
    net = net.to(device)
    # convolutions on the last, tiny maps train as matrix products on the CPU (models/small_maps.py: steps of
    # mobilenet_v3_small at 64 px 1.66x faster, resnet18 1.30-1.36x, benchmarks/bench_small_maps.py; the same
    # function up to float rounding, the same weights)
    small_map_convs = use_small_map_convs(net)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    model: nn.Module = net  # what the step runs: ``net`` itself, or its DDP wrapper
    if ddp.world > 1:
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
        if device.type == "cuda":
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        elif has_bn and ddp.main:
            warnings.warn(
                "BatchNorm statistics are per rank on CPU (no SyncBatchNorm kernel): results differ from one "
                "process with the same global batch",
                stacklevel=2,
            )
        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    normalizer = Normalizer.from_recipe(recipe).to(device)
    images = load_images(index)
    train_rows = index.split_indices(cfg.data.train_split)
    if len(train_rows) < 2:
        raise StillroomError(f"{index.root}: the {cfg.data.train_split!r} split has {len(train_rows)} sample(s)")
    transfer_rows, n_transfer = _transfer_rows(index, cfg, loss_fn, teachers), len(index.split_indices(TRANSFER))
    targets = index.labels
    if len(transfer_rows):  # rows without a class: targets the CE terms skip, teacher terms only
        targets = targets.copy()
        targets[transfer_rows] = IGNORE_INDEX
        train_rows = np.concatenate([train_rows, transfer_rows])
    # Replay: views are re-created with the store's augment seed (checked equal to replay_seed above).
    dataset = IndexDataset(
        images,
        targets,
        train_rows,
        get_augment(cfg.augment, recipe),
        replay_seed if replay_views else cfg.seed,
        replay_views=replay_views,
        draw_seed=cfg.seed,
    )
    progressive, binary = cfg.schedule.progressive, recipe.get("kind", "silhouette") == "silhouette"
    if progressive is not None and progressive.epochs and progressive.size >= size:
        raise StillroomError(
            f"{cfg.name}: schedule.progressive.size {progressive.size} must be below the data's size {size}"
        )
    batch_size = min(cfg.batch_size, len(train_rows))

    row_labels, row_groups = targets[train_rows], np.asarray(index.groups)[train_rows]  # per dataset position

    def epoch_sampler(epoch: int) -> GlobalBatchSampler:
        seed, k = cfg.seed * 100_003 + epoch, cfg.data.per_class
        if not k:
            return GlobalBatchSampler(len(train_rows), batch_size, seed, ddp.rank, ddp.world)
        return ClassBatchSampler(row_labels, row_groups, batch_size, k, seed, ddp.rank, ddp.world)

    # fails on an indivisible batch before any step; drop_last: a batch of 1 breaks BatchNorm
    steps_per_epoch = epoch_sampler(0).steps
    optimizer = _optimizer(cfg, net, loss_fn)
    sam_params = [p for p in net.parameters() if p.requires_grad]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, steps_per_epoch))
    bn_rows = _bn_rows(index, cfg)
    ema = _weight_average(cfg, net, steps_per_epoch)

    # a K+1 model's sink is "ood"; a K-class model of a merged index (outlier exposure) has no column for it
    classes = index.classes + (["ood"] if num_classes > index.num_classes else [])
    classes = classes[:num_classes]
    meta = {
        "arch": heads_arch(cfg.model.name, cfg.model.heads, cfg.model.head_depth),  # what ``create_model`` builds again
        "amp": "bf16" if use_amp else "off",  # what training ran with (``amp: bf16`` falls back where unsupported)
        "small_map_convs": small_map_convs,  # layers that train as matrix products on small maps (models.small_maps)
        "in_chans": channels,
        "num_classes": num_classes,
        "img_size": size,
        "classes": classes,
        # what people read (data.species_names): one per class, the class id where no name is known
        "display_names": display_names({**index.meta, "classes": classes}),
        "recipe": recipe,
        "index": str(index.root),
        "index_hash": index.index_hash,
        "labels_hash": index.labels_hash,
        "content_hash": index.content_hash,
        "loss": cfg.loss.name,
        # the values the loss ran with (preset applied, defaults filled), when the loss can say (``params.resolved``)
        "loss_params": _resolved_params(loss_fn),
        "stillroom_version": __version__,
        # transfer rows trained on (teacher targets only) of those in the index; absent when it has none
        **({"transfer_rows": [int(len(transfer_rows)), int(n_transfer)]} if n_transfer else {}),
        # what evaluation copies re-estimate BN statistics on (precise_bn; issue 13): recorded, not implied
        "precise_bn": {
            "enabled": cfg.precise_bn.enabled,
            "rows": int(len(bn_rows)),
            "split": cfg.data.train_split,
            "batch_size": cfg.batch_size,
            "seed": cfg.seed,
            "method": "pooled population statistics, order-free rows",
        },
    }
    history: list[dict[str, Any]] = []
    start_epoch, best = 0, {"epoch": -1, "val_top1": -1.0, "val_nll": math.inf}
    # K+1 model on a merged index (class K = OOD sink), or a K-class one exposed to its OOD rows: select on ID-only
    # val rows (``_split_report``) so the OOD val rows cannot dominate the choice; closed-set runs keep the
    # all-rows rule and identical state files.
    sink = sink_class if sink_class is not None and num_classes in (sink_class, sink_class + 1) else None
    if sink is not None:
        best.update(val_id_top1=-1.0, val_id_nll=math.inf, selected_on="val_id_top1")
    if resumable:
        rng, state = load_training_state(out_dir / "last.safetensors", net, optimizer, ema, loss_fn)
        torch.set_rng_state(rng)
        start_epoch, history, best = state["epoch"], state["history"], state["best"]
        # Re-derive the LR from the restored step count (LambdaLR is stateless apart from last_epoch).
        scheduler.last_epoch = start_epoch * steps_per_epoch
        for group, base, lr_lambda in zip(
            optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
        ):
            group["lr"] = base * lr_lambda(scheduler.last_epoch)
    if ddp.main:
        atomic_write_json(out_dir / "model.json", meta)

    for epoch in range(start_epoch, cfg.schedule.epochs):
        t0 = time.perf_counter()
        model.train()
        dataset.set_view(epoch)
        train_side = progressive.size if progressive is not None and epoch < progressive.epochs else None
        sampler = epoch_sampler(epoch)
        loader = DataLoader(
            dataset,
            batch_size=batch_size // ddp.world,
            sampler=sampler,
            drop_last=True,
            num_workers=cfg.num_workers,
        )
        sums: dict[str, float] = {}
        correct = seen = batch_rows = 0  # seen: rows with a class (top-1); batch_rows: all (loss means)
        mix_rng = np.random.default_rng([cfg.seed & 0xFFFFFFFF, epoch, 0x6D6978])  # per epoch: resume is exact
        for step, (x, y, rows, views) in enumerate(loader):
            x, y = x.to(device), y.to(device)
            # mixed before the teachers: online teachers score the very image the student sees (function matching)
            x, partner, lam = mix_batch(x, cfg.mix.mode, cfg.mix.alpha, cfg.mix.prob, mix_rng)
            if teachers is None:
                t_logits = None
            else:
                t_logits = teachers(x, rows, views if replay_views else None).to(device)
            if train_side is not None:  # progressive resizing: the teachers above saw the full-size view
                x = downscale(x, train_side, binary)
            xn = normalizer(x)
            if cfg.channels_last:
                xn = xn.contiguous(memory_format=torch.channels_last)
            labelled = y != IGNORE_INDEX
            batch = (xn, t_logits, y, partner, lam, labelled, epoch)
            logits, terms, loss = _forward_loss(model, loss_fn, batch, device, use_amp, tap, bank)
            if not torch.isfinite(loss):
                raise StillroomError(f"epoch {epoch + 1} step {step}: loss is {loss.item()}; lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.sam_rho > 0:  # SAM: the gradient again at the worst nearby weights (train.sam)
                eps = sam.ascend(sam_params, cfg.optim.sam_rho, cfg.optim.sam_adaptive)
                optimizer.zero_grad(set_to_none=True)
                with sam.frozen_bn_stats(net):  # the batch already moved the running statistics once
                    _forward_loss(model, loss_fn, batch, device, use_amp, tap, bank)[2].backward()
                sam.descend(sam_params, eps)
            if loss_weights and ddp.world > 1:  # DDP averages the model's gradients only; the loss's: here
                for p in loss_weights:
                    # every rank joins every all-reduce (a rank whose batch left the term at 0 has no gradient)
                    p.grad = torch.zeros_like(p) if p.grad is None else p.grad
                    dist.all_reduce(p.grad)
                    p.grad /= ddp.world
            optimizer.step()
            scheduler.step()
            if ema is not None and epoch >= cfg.ema.start_epoch:
                ema.update_parameters(net)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(y)
            correct += int((logits.argmax(1)[labelled] == y[labelled]).sum())  # transfer rows have no class
            seen += int(labelled.sum())
            batch_rows += len(y)
            if progress:
                progress("train", step + 1, steps_per_epoch)
        keys = sorted(sums)
        correct, seen, batch_rows, *totals = ddp.sum([correct, seen, batch_rows, *(sums[k] for k in keys)])  # ranks
        sums = dict(zip(keys, totals, strict=True))
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "lr": optimizer.param_groups[0]["lr"],
            "train_top1": correct / max(seen, 1),
            **{k: v / max(batch_rows, 1) for k, v in sums.items()},
            "train_seconds": time.perf_counter() - t0,
            **({"train_size": train_side} if train_side is not None else {}),
        }
        last = epoch + 1 == cfg.schedule.epochs
        if not ddp.main:
            continue  # rank 0 alone evaluates and writes; peers wait for it in the next all-reduce
        if (epoch + 1) % cfg.eval_every == 0 or last:
            # with a weight average, the average is what is evaluated, selected and saved
            eval_model = evaluation_copy(net if ema is None else ema.module, normalizer, images, bn_rows, cfg)
            val = _split_report(eval_model, normalizer, images, index, cfg.data.val_split, sink)
            record.update(val_top1=val["top1"], val_macro_f1=val["macro_f1"], val_nll=val["nll"])
            # Best = highest val top-1, ties broken by lower val NLL (never test: REFERENCE 6); K+1 runs use the
            # ID-only top-1 and NLL instead (``_split_report``).
            key, prev = (val["top1"], -val["nll"]), (best["val_top1"], -best["val_nll"])
            if sink is not None:
                record.update(
                    val_id_top1=val["id_top1"], val_id_nll=val["id_nll"], val_ood_rejection=val["ood_rejection"]
                )
                # .get: a state saved before ID-only selection existed has no such keys
                key = (val["id_top1"], -val["id_nll"])
                prev = (best.get("val_id_top1", -1.0), -best.get("val_id_nll", math.inf))
            if key > prev:
                best = {"epoch": epoch + 1, "val_top1": val["top1"], "val_nll": val["nll"]}
                if sink is not None:
                    best.update(val_id_top1=val["id_top1"], val_id_nll=val["id_nll"], selected_on="val_id_top1")
                save_weights(eval_model, out_dir / "best.safetensors")
            if last:
                save_weights(eval_model, out_dir / "final.safetensors")
        record["epoch_seconds"] = time.perf_counter() - t0
        history.append(record)
        loop_state = {"epoch": epoch + 1, "history": history, "best": best}
        save_training_state(
            out_dir / "last.safetensors", net, optimizer, torch.get_rng_state(), loop_state, ema, loss_fn
        )
        atomic_write_json(out_dir / "state.json", loop_state)
        # Rewritten whole (atomically) from ``history``, which resume restores: a crash can neither tear the last
        # line nor keep the line of an epoch whose checkpoint was never saved.
        atomic_write_text(out_dir / "log.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        if progress:
            progress("epoch", epoch + 1, cfg.schedule.epochs, record)

    if ddp.main and on_finished is not None:
        on_finished(out_dir, index, images)
    ddp.barrier()  # every rank returns a finished run directory
    return out_dir
