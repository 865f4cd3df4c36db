"""Typed run configuration (pydantic), validated on load.

One source of defaults per run (STYLE 9): the model below, overridden by a YAML file, then by ``--set key=value``
on the command line, then frozen and written into the run directory. YAML is read with ``safe_load`` only, and
unknown keys are errors, so a config can never import or execute code (REFERENCE 6, torchdistill pitfall).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stillroom._io import StillroomError

__all__ = ["TrainConfig", "load_config", "apply_overrides", "config_from_dict", "read_yaml_mapping"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    index: Path = Field(description="dataset directory holding index.csv + index.json")
    train_split: Literal["train", "val", "test"] = "train"
    val_split: Literal["train", "val", "test"] = "val"
    test_split: Literal["train", "val", "test"] = "test"
    transfer: bool = Field(
        True,
        description="a distilled run also learns from the index's 'transfer' rows (no class; teacher targets only, "
        "`stillroom data add-transfer`); false: they are left out",
    )
    per_class: int = Field(
        0,
        ge=0,
        description="0: each epoch visits the train rows in a random order; k >= 2: every batch is made of runs of k "
        "rows of one class, taken across the class's groups (P x K batches, train/sampling.py), so a loss on "
        "classmates (supcon) finds them in every batch",
    )


class MixStyleConfig(_Strict):
    """MixStyle while training (models/mixstyle.py; Zhou et al. 2021 §3-4.1): instance statistics of two images mixed
    after the named early stages with probability ``p``; the weights stay those of the plain architecture."""

    p: float = Field(0.5, ge=0, le=1)
    alpha: float = Field(0.1, gt=0)
    layers: tuple[str, ...] = Field(("layer1", "layer2"), min_length=1, description="submodule names (ResNet's)")


class ModelConfig(_Strict):
    name: str = "mobilenet_v3_small"
    #: start from ImageNet weights (models/pretrained.py; only the architectures listed there have them)
    pretrained: Literal["imagenet"] | None = None
    #: mix feature styles while training (off by default)
    mixstyle: MixStyleConfig | None = None
    #: last linear layer split into this many heads, head m taught by teacher m alone, answering with their mean
    #: distribution (models/heads.py; Tran et al. 2020); 1 = the plain model. Needs 1 teacher per head (or none).
    heads: int = Field(1, ge=1, le=64)
    #: what each head is: a copy of the last linear layer, or of the whole classifier after the pooled features
    head_depth: Literal["linear", "classifier"] = "linear"


class OptimConfig(_Strict):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(5e-4, ge=0)
    # sharpness-aware minimization (train.sam): radius of the ascent step; 0 = off. Two passes per step.
    sam_rho: float = Field(0.0, ge=0)
    sam_adaptive: bool = Field(False, description="ASAM: the ascent step scaled element-wise by |w|")


class ProgressiveConfig(_Strict):
    """Progressive resizing (Tan & Le 2021, EfficientNetV2 §4; Touvron et al. 2019, FixRes): the first ``epochs``
    epochs train on views reduced to ``size`` px (area averaging, re-binarized for binary masks), the rest at the
    data's own size, so the model ends, validates and is saved at the resolution it is used at."""

    size: int = Field(ge=8, description="side of the low-resolution views, below the data's size")
    epochs: int = Field(ge=0, description="how many of the first epochs train at that side")


class ScheduleConfig(_Strict):
    epochs: int = Field(30, ge=1)
    warmup_epochs: float = Field(1.0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    progressive: ProgressiveConfig | None = None

    @model_validator(mode="after")
    def _last_epoch_full_size(self) -> ScheduleConfig:
        if self.progressive is not None and self.progressive.epochs >= self.epochs:
            raise ValueError(
                f"progressive.epochs ({self.progressive.epochs}) must be below epochs ({self.epochs}): the last "
                "epoch trains at the data's size"
            )
        return self


class LossConfig(_Strict):
    """The loss by registry name and its raw parameters. Each loss types its own parameters, in the distillation
    layer above this module (``stillroom.distill.losses``: ``check_loss_config``, ``resolve_loss_params``), which
    ``stillroom sweep`` calls when it plans. Kept raw here, so config.json holds what was given."""

    name: str = "ce"
    params: dict[str, Any] = Field(default_factory=dict)


class TeachersConfig(_Strict):
    cached: list[Path] = Field(default_factory=list, description="soft-label store directories (aligned)")
    online: list[Path] = Field(default_factory=list, description="teacher run directories, run on each batch")
    replay_seed: int | None = Field(
        None, description="augment seed replay stores must have been exported with (default: the run's seed)"
    )
    replay_view: Literal["same", "geometry"] = Field(
        "same",
        description=(
            "what a replay store's teacher saw of each view: 'same', the student's view; 'geometry', that view "
            "before its drawing-style changes (stroke, rendering), exported with the augment "
            "'restyle_geometry' (data.augment.teacher_view). Replay stores only"
        ),
    )

    @property
    def count(self) -> int:
        return len(self.cached) + len(self.online)


class PreciseBNConfig(_Strict):
    enabled: bool = True
    max_images: int = Field(2048, ge=1, description="un-augmented train images used to re-estimate BN statistics")


class EMAConfig(_Strict):
    """An exponential moving average of the weights (Polyak averaging; ``torch.optim.swa_utils.AveragedModel`` with
    ``get_ema_multi_avg_fn``), updated after every optimizer step from ``start_epoch`` on; evaluation, model selection
    and the saved weights use the average (its BatchNorm statistics re-estimated by ``precise_bn`` as for any
    evaluation copy). Averaged weights sit in flatter regions of the loss, which is what helps under a domain shift
    (SWAD, Cha et al. 2021). ``half_life`` is in epochs, so it means the same at any batch size: the per-step decay
    is ``0.5 ** (1 / (half_life * steps_per_epoch))``."""

    half_life: float = Field(0.0, ge=0, description="half-life of the weight average in epochs (0: no average)")
    start_epoch: int = Field(0, ge=0, description="first epoch (0-based) whose steps update the average")

    @property
    def enabled(self) -> bool:
        return self.half_life > 0


class MixConfig(_Strict):
    """Mixed training images (``data.mix.mix_batch``): CutMix (Yun et al. 2019) pastes a box of another image
    of the batch, mixup (Zhang et al. 2018) blends two; hard-label terms take both labels, weighted by their pixel
    share. With teachers run online, the teacher scores the mixed image and the student learns its answer there:
    function matching (Beyer et al. 2022, "A good teacher is patient and consistent", §3), which shows the student
    what the teacher says off the data, e.g. on two silhouettes cut together. Cached stores hold the logits of
    unmixed views, so mixing needs online teachers (or none)."""

    mode: Literal["none", "cutmix", "mixup"] = "none"
    alpha: float = Field(1.0, gt=0, description="lam ~ Beta(alpha, alpha), the share of each row's own image")
    prob: float = Field(1.0, ge=0, le=1, description="share of batches that are mixed")


class TrainConfig(_Strict):
    """Everything one training run needs; teachers and students use the same schema and the same loop."""

    name: str = "run"
    data: DataConfig
    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    loss: LossConfig = LossConfig()
    teachers: TeachersConfig = TeachersConfig()
    batch_size: int = Field(128, ge=2)
    augment: Literal["auto", "silhouette", "shape", "restyle", "deform", "topology", "rgb", "none"] = "auto"
    seed: int = 0
    precise_bn: PreciseBNConfig = PreciseBNConfig()
    ema: EMAConfig = EMAConfig()
    mix: MixConfig = MixConfig()
    eval_every: int = Field(1, ge=1, description="validate every N epochs (and always at the last)")
    channels_last: bool = True
    # auto: bfloat16 autocast on a GPU that has it; bf16: also on a CPU with native bfloat16 (AMX / AVX512-BF16),
    # where it pays for large convolutions (the demo's resnet18 teacher: 555 vs 710 s) but not for
    # mobilenet_v3_small's depthwise layers (3x slower); off: float32 everywhere. Weights and evaluation stay float32.
    amp: Literal["auto", "bf16", "off"] = "auto"
    num_workers: int = Field(0, ge=0)
    deterministic: bool = True

    @field_validator("amp", mode="before")
    @classmethod
    def _amp_off(cls, v: Any) -> Any:
        # YAML 1.1 reads a bare `off` (in a file or `--set amp=off`) as false: that is the "off" this field means
        return "off" if v is False else v

    @model_validator(mode="after")
    def _ema_needs_bn_estimate(self) -> TrainConfig:
        # the average of weights is not paired with any batch statistics: only re-estimated ones fit it
        if self.ema.enabled and not self.precise_bn.enabled:
            raise ValueError("ema needs precise_bn.enabled: averaged weights need BatchNorm statistics of their own")
        if self.ema.enabled and self.ema.start_epoch >= self.schedule.epochs:
            raise ValueError(f"ema.start_epoch ({self.ema.start_epoch}) must be below schedule.epochs")
        return self

    @model_validator(mode="after")
    def _mix_needs_online_teachers(self) -> TrainConfig:
        if self.mix.mode != "none" and self.teachers.cached:
            raise ValueError(
                f"mix.mode={self.mix.mode} with teachers.cached: a store holds the teacher's logits of unmixed views; "
                "run the teachers online (teachers.online) so they score the mixed images"
            )
        return self

    @model_validator(mode="after")
    def _one_teacher_per_head(self) -> TrainConfig:
        n = len(self.teachers.cached) + len(self.teachers.online)
        if self.model.heads > 1 and n not in (0, self.model.heads):
            raise ValueError(f"model.heads {self.model.heads} needs one teacher per head (or no teacher), got {n}")
        return self

    @model_validator(mode="after")
    def _whole_runs_of_classmates(self) -> TrainConfig:
        k = self.data.per_class
        if k == 1 or (k and self.batch_size % k):
            raise ValueError(
                f"data.per_class {k}: must be 0 (random order) or >= 2 and divide batch_size ({self.batch_size}), "
                "so that every batch holds whole runs of one class"
            )
        return self

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not v or "/" in v or v.startswith("."):
            raise ValueError("name must be a plain directory name (no '/', not starting with '.')")
        return v


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid config"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        lines.append(f"  {loc}: {e['msg']}" + (f" (got {e['input']!r})" if e["type"] != "missing" else ""))
    return "\n".join(lines)


def config_from_dict(raw: dict[str, Any], source: str = "<config>") -> TrainConfig:
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as err:
        raise StillroomError(_format_errors(err, source)) from None


# PyYAML follows YAML 1.1, where "1e-5" (no dot) is a string; YAML 1.2 and every user read it as a number.
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set ``raw[a][b][c] = value`` for ``key`` "a.b.c" in place, creating sections; a non-section on the way is an
    error."""
    node = raw
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise StillroomError(f"{key!r}: {p!r} is not a section")
    node[parts[-1]] = value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML scalar/list) to a nested dict, returning a copy."""
    import copy

    out = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise StillroomError(f"--set {item!r}: expected key=value")
        key, value = item.split("=", 1)
        try:
            parsed = yaml.safe_load(value)  # safe_load: a tag like !!python/object is refused, never run
        except yaml.YAMLError as err:
            raise StillroomError(f"--set {item!r}: not a valid YAML value ({err})") from None
        if isinstance(parsed, str) and _FLOAT.fullmatch(parsed.strip()):
            parsed = float(parsed)
        try:
            set_dotted(out, key, parsed)
        except StillroomError as err:
            raise StillroomError(f"--set {item!r}: {err}") from None
    return out


def read_yaml_mapping(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """A YAML file whose top level is a mapping, read with ``safe_load`` (no tags that build Python objects)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise StillroomError(f"{path}: {what} not found") from None
    except UnicodeDecodeError as err:
        raise StillroomError(f"{path}: {what} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:  # a directory, no read permission
        raise StillroomError(f"{path}: cannot read the {what} ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        raise StillroomError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(raw, dict):
        raise StillroomError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config (safe_load), apply overrides, validate. Relative paths resolve from the CWD."""
    raw = read_yaml_mapping(path)
    return config_from_dict(apply_overrides(raw, overrides or []), source=str(path))
