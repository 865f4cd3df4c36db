"""The prediction service: FastAPI + ONNX Runtime, the strictness ladder, SQLite telemetry (seed 000 §4.2-4.3).

``create_app(run_dir, db_path)`` needs an exported run: ``RUN/export/export.json`` with its ONNX files (``stillroom
export RUN --onnx``) and ``RUN/ladder.json``. At start-up every artefact is checked against the run: the ONNX file's
sha256 against export.json, export.json and ladder.json against the sha256 of the safetensors they came from, so a
retrained run never serves with stale files.

Endpoints:

- ``POST /predict``: multipart field ``file`` (PNG, GIF, JPEG, WebP or BMP). The image goes through the training
  preprocessing (``object_mask`` + ``render_silhouette``: ``preprocess_mask``, or the recipe's canonical outline): RGBA
  alpha > threshold when the image has an alpha channel (``mask_source: "alpha"``), else a ready black-on-white mask
  (``"mask"``, luminance < 128 is object). The silhouette first goes through the ladder's structure gate
  (``stillroom.deploy.structure``): one without the shape structure of the training images (a filled square, a full
  frame, a line) is rejected with reason "no-structure" and the gate's findings (``structure``), whatever the model
  says. Returns the ladder's verdict and reason, top-5 with probabilities softmax(z / T) over the in-distribution
  classes, the temperature and where it came from, the silhouette that was classified (PNG data URL) and an ``id``.
- ``POST /feedback/{id}``: JSON ``{"action": "confirm" | "correct" | "not_species", "label": ..., "comment": ...}``.
  ``label`` belongs to "correct" only (one of the model's classes; null or absent otherwise), unknown fields are
  refused, and text must be valid Unicode (no lone surrogates).
- ``GET /`` the web page, ``GET /info`` the run's name and hashes (never its path on the server), classes and
  thresholds, ``GET /health``, ``GET /metrics`` counts by verdict.

Limits, each a clear 4xx: request body over the byte cap (413, checked on the declared length and while reading),
empty upload (400), a declared content type that is not an accepted image type, or bytes of another format (415),
undecodable or truncated image (400), more pixels than ``max_pixels`` (413; read from the header, before any
decoding, so a decompression bomb is never expanded), a side under 8 px or no object pixels (422). A feedback body
over ``FEEDBACK_MAX_BYTES`` is a 413. Every 422 names the field and the problem, never echoes the rejected input
(``{"detail": "body.comment: ...", "errors": [{"field": ..., "problem": ...}]}``).

The ladder's thresholds and the temperature belong to the logits of the model that is served (issue 15): fp32
serves ``RUN/ladder.json`` (fitted on the PyTorch logits, which the fp32 ONNX file matches to 1e-3) and the weights'
``calibration.json`` entry; int8 (``model="int8"``, only if its accuracy check passed) serves
``RUN/ladder_int8.json`` and the ``<weights>:int8`` temperature, both fitted on the int8 file's own validation logits
by ``stillroom export --int8`` and checked against that file's sha256.

KNN signal (issue 16 item 4): when the served ladder's signal is knn (``deploy.ladder``, ``deploy.knn``), the
Predictor runs ``RUN/export/model_features.onnx`` instead of ``model.onnx`` (one call gives the logits and the pooled
penultimate features; checked against export.json's sha256 and parity), in ONNX Runtime, the one runtime its parity
is checked in (``/info`` ``runtime`` says so), and the ladder's bank
(``RUN/ladder_knn_bank.npy``) is checked against the sha256 in ladder.json when the ladder loads. int8 with a knn
ladder is refused (the int8 ladder is fitted on a logit signal).

Temperature: from ``RUN/calibration.json`` (the entry for the served model, checked by sha256, or a top-level
``temperature``); without one T = 1 and the response says so (``temperature_source``).

Why one module of over 400 lines: the served request path: upload limits, preprocessing, the ONNX session, the
ladder and the feedback endpoints are one Predictor and one FastAPI app.
"""

from __future__ import annotations

import base64
import io
import math
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from stillroom._io import StillroomError, read_json, sha256_bytes, sha256_file
from stillroom.data.outline import outline_from_recipe, render_silhouette
from stillroom.data.preprocess import MIN_IMAGE_SIDE, object_mask
from stillroom.deploy._ort import normalize_uint8
from stillroom.deploy.backends import SERVE_BACKENDS, backend_version, make_runner, serving_backend
from stillroom.deploy.ladder import Ladder, describe
from stillroom.deploy.run_ladder import LADDER_FILES, served_temperature_key
from stillroom.deploy.telemetry import FEEDBACK_ACTIONS, Telemetry
from stillroom.runs import CALIBRATION_FILE, Run, read_temperature

__all__ = [
    "create_app",
    "Predictor",
    "UploadRejected",
    "ALLOWED_TYPES",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_MAX_PIXELS",
    "FEEDBACK_MAX_BYTES",
]

DEFAULT_MAX_UPLOAD_BYTES = 5 * 1024 * 1024
DEFAULT_MAX_PIXELS = 4096 * 4096
# Multipart framing around the file (boundaries, part headers) on top of the file's own bytes.
_MULTIPART_SLACK = 16 * 1024
# A valid feedback body is under 2 KB (a 200-character label, a 1000-character comment, JSON escapes aside).
FEEDBACK_MAX_BYTES = 16 * 1024
ALLOWED_TYPES = {
    "image/png": "PNG",
    "image/gif": "GIF",
    "image/jpeg": "JPEG",
    "image/webp": "WEBP",
    "image/bmp": "BMP",
}
_EXT = {"PNG": "png", "GIF": "gif", "JPEG": "jpg", "WEBP": "webp", "BMP": "bmp"}
TOP_K = 5


class Feedback(BaseModel):
    """Body of ``POST /feedback/{id}``: ``label`` is required for "correct" (one of the model's classes) and refused
    with the other actions; unknown fields are refused; text must encode as UTF-8 (no lone surrogates)."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["confirm", "correct", "not_species"]
    label: str | None = Field(default=None, min_length=1, max_length=200)
    comment: str | None = Field(default=None, max_length=1000)

    @field_validator("label", "comment")
    @classmethod
    def _utf8(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("not valid Unicode text (holds a lone surrogate)") from None
        return v


_FIELD_CHARS, _PROBLEM_CHARS, _MAX_ERRORS = 64, 200, 10
_PREDICTION_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex, as /predict hands them out


def _printable(text: object, limit: int) -> str:
    """``text`` cut to ``limit`` characters, lone surrogates escaped: safe to put in a JSON reply."""
    s = str(text)
    s = s if len(s) <= limit else s[: limit - 3] + "..."
    return s.encode("utf-8", "backslashreplace").decode("utf-8")


def _validation_reply(exc: RequestValidationError) -> JSONResponse:
    """422 naming each bad field and its problem. FastAPI's default echoes the whole rejected input, which fails to
    encode for a lone surrogate (a 500) and mirrors megabytes back for a huge one."""
    errors = [
        {
            "field": _printable(".".join(str(p) for p in e.get("loc", ())) or "body", _FIELD_CHARS),
            "problem": _printable(e.get("msg", "invalid"), _PROBLEM_CHARS),
        }
        for e in exc.errors()[:_MAX_ERRORS]
    ]
    detail = "; ".join(f"{e['field']}: {e['problem']}" for e in errors) or "invalid request"
    return JSONResponse({"detail": detail, "errors": errors}, status_code=422)


class UploadRejected(Exception):
    """A client error: HTTP ``status`` and a message for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _temperature(run_dir: Path, weights: str, weights_sha256: str) -> tuple[float, str]:
    """The served temperature and a line saying where it came from (``runs.read_temperature``: the one rule)."""
    t, source = read_temperature(run_dir, weights, weights_sha256)
    if source is None:
        path = run_dir / CALIBRATION_FILE
        why = (
            f"no {CALIBRATION_FILE} in the run"
            if not path.is_file()
            else f"{CALIBRATION_FILE} has no temperature for {weights!r}"
        )
        return t, f"default T = 1: {why}"
    return t, source


@dataclass
class _Upload:
    data: bytes
    content_type: str
    filename: str


class Predictor:
    """Everything ``/predict`` needs, loaded once and checked: ONNX session, ladder, temperature, preprocessing."""

    def __init__(
        self,
        run_dir: str | Path,
        model: Literal["fp32", "int8"] = "fp32",
        threads: int | None = None,
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        backend: str = "auto",
    ) -> None:
        self.run_dir = run_dir = Path(run_dir)
        for name, v in (("max_upload_bytes", max_upload_bytes), ("max_pixels", max_pixels)):
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 1):  # NaN fails every comparison
                raise StillroomError(f"{name} must be a finite number >= 1, got {v!r}")
        self.max_upload_bytes, self.max_pixels = int(max_upload_bytes), int(max_pixels)
        self.run = Run(run_dir)
        meta = self.run.meta
        recipe = meta.get("recipe", {})
        if recipe.get("kind", "silhouette") != "silhouette":
            raise StillroomError(
                f"{run_dir}: the service serves silhouette models, this run's data is {recipe['kind']}"
            )
        exp_path = run_dir / "export" / "export.json"
        if not exp_path.is_file():
            raise StillroomError(f"{exp_path}: not found; run `stillroom export {run_dir} --onnx` first")
        exp = read_json(exp_path)
        if not exp.get("ok"):
            raise StillroomError(f"{exp_path}: the export failed its parity check; export again")
        weights = exp["weights"]
        wpath = run_dir / weights["file"]
        self.weights_sha256 = sha256_file(wpath)
        if self.weights_sha256 != weights["sha256"]:
            raise StillroomError(f"{exp_path}: exported from other weights than {wpath}; export again")
        if model not in ("fp32", "int8"):
            raise StillroomError(f"model must be 'fp32' or 'int8', got {model!r}")
        key = model
        if key not in exp["models"]:
            raise StillroomError(f"{exp_path}: no {key} model; run `stillroom export {run_dir} --onnx --int8`")
        if key == "int8" and not exp.get("int8_check", {}).get("ok"):
            raise StillroomError(f"{exp_path}: the int8 model failed its accuracy check; serve fp32")
        # the ladder and the temperature of the served model's own logits (issue 15): int8 has its own of each
        ladder_path = run_dir / LADDER_FILES[key]
        if not ladder_path.is_file():
            raise StillroomError(
                f"{ladder_path}: not found; fit it on the {key} model's logits with `stillroom export {run_dir}"
                + (" --int8`" if key == "int8" else "`")
            )
        self.ladder = Ladder.load(ladder_path)  # a knn ladder also loads its bank, checked by sha256
        self.ladder_sha256 = sha256_file(ladder_path)
        self.knn = self.ladder.uses_features  # knn, rmd, or fused with either: features served
        entry = exp["models"][key]
        if self.knn:  # logits and features from one file (module docstring, "KNN signal")
            if key != "fp32":
                raise StillroomError(
                    f"{ladder_path}: a knn ladder is served with the fp32 features model; {key} features are not "
                    "exported (its ladder takes a logit signal)"
                )
            entry = exp.get("features") or {}
            if not entry.get("ok") or "file" not in entry:
                raise StillroomError(
                    f"{exp_path}: no model_features.onnx that passed its parity check ({entry.get('skipped', 'none')})"
                    f"; the knn ladder needs it: run `stillroom export {run_dir}` again"
                )
        self.model_file = run_dir / "export" / entry["file"]
        if not self.model_file.is_file():
            raise StillroomError(f"{self.model_file}: not found; export again")
        self.model_sha256 = sha256_file(self.model_file)
        if self.model_sha256 != entry["sha256"]:
            raise StillroomError(f"{self.model_file}: sha256 differs from export.json; export again")
        members = getattr(self.ladder, "extra_", {}).get("members", [])
        if self.ladder.n_members_ != 1:
            raise StillroomError(f"{ladder_path}: fitted for {self.ladder.n_members_} models; serving one")
        if members and members[0].get("sha256") not in (None, self.weights_sha256):
            raise StillroomError(f"{ladder_path}: fitted on other weights; run `stillroom export` again")
        served_file = (getattr(self.ladder, "extra_", {}).get("fit_data") or {}).get("served_file") or {}
        if key != "fp32" and served_file.get("sha256") != self.model_sha256:
            raise StillroomError(f"{ladder_path}: fitted on another {key} file; run `stillroom export` again")
        self.runtime = self._runtime(exp, key, backend, served_file, ladder_path, threads)
        if key == "fp32":
            self.temperature, self.temperature_source = _temperature(run_dir, weights["name"], self.weights_sha256)
        else:
            self.temperature, self.temperature_source = _temperature(
                run_dir, served_temperature_key(weights["name"], key), self.model_sha256
            )
        self.classes = list(meta["classes"])
        names = meta.get("display_names")
        self.names = list(names) if isinstance(names, list) and len(names) == len(self.classes) else self.classes
        self.sink, self.k_id = self.run.layout.sink, self.run.layout.num_id
        if self.ladder.num_classes_ != self.k_id:
            raise StillroomError(f"{ladder_path}: fitted for {self.ladder.num_classes_} classes, run has {self.k_id}")
        self.size, self.channels = int(meta["img_size"]), int(meta["in_chans"])
        gate = self.ladder.structure_
        if gate is not None and gate.size != self.size:
            raise StillroomError(
                f"{ladder_path}: structure gate fitted on {gate.size} px silhouettes, the run serves "
                f"{self.size} px; run `stillroom export {run_dir}` again"
            )
        self.padding = float(recipe.get("padding", 0.2))
        # a recipe built with the canonical outline (issue 16) renders uploads through it too: no train/serve skew
        self.outline = outline_from_recipe(recipe)
        self.alpha_threshold = int(recipe.get("alpha_threshold", 127))
        self.mean, self.std = exp["input"]["mean"], exp["input"]["std"]
        self.weights = {
            f"onnx:{self.model_file.name}": self.model_sha256,
            f"safetensors:{wpath.name}": self.weights_sha256,
        }
        if self.ladder.uses_knn:
            rec = self.ladder.knn_record_
            self.weights[f"npy:{rec['bank_file']}"] = rec["bank_sha256"]
        if self.ladder.uses_rmd:
            rec = self.ladder.rmd_record_
            self.weights[f"npz:{rec['file']}"] = rec["sha256"]

    def _runtime(
        self, exp: dict[str, Any], key: str, backend: str, served_file: dict[str, Any], ladder_path: Path,
        threads: int | None,
    ) -> dict[str, Any]:  # fmt: skip
        """Load the runtime that serves (issue 15 item 2) and describe it for /info.

        fp32: ``backend="auto"`` takes the fastest backend at batch 1 that passed export's parity check
        (``serving_backend``); every such backend gives PyTorch's logits within ``atol``, so the fp32 ladder holds.
        int8: kernels differ between runtimes, so int8 is served on the runtime its ladder and temperature were
        fitted on (``fit_data.served_file.backend``; ONNX Runtime for ladders written before it was recorded), and
        a named backend that differs is refused."""
        if backend not in SERVE_BACKENDS:
            raise StillroomError(f"backend must be one of {', '.join(SERVE_BACKENDS)}, got {backend!r}")
        if key == "int8":
            fitted = served_file.get("backend", "onnxruntime")
            if backend not in ("auto", fitted):
                raise StillroomError(
                    f"{ladder_path}: fitted on {fitted}'s int8 logits; serve int8 with --backend {fitted} or auto"
                )
            choice = serving_backend(exp, key, fitted)
            choice["reason"] = f"the int8 ladder and temperature were fitted on {fitted}'s logits"
        elif self.knn:
            if backend not in ("auto", "onnxruntime"):
                raise StillroomError(
                    f"{ladder_path}: a knn ladder is served by ONNX Runtime (model_features.onnx has two outputs); "
                    "use --backend auto or onnxruntime"
                )
            choice = {
                "backend": "onnxruntime",
                "reason": "knn ladder: model_features.onnx (logits + features), parity-checked in ONNX Runtime only",
                "export_median_ms": None,
            }
        else:
            choice = serving_backend(exp, key, backend)
        self._run, fixed = make_runner(choice["backend"], self.model_file, threads, all_outputs=self.knn)
        if fixed not in (None, 1):
            raise StillroomError(f"{self.model_file}: fixed batch {fixed}; the service runs one image per call")
        return {
            **choice,
            "version": backend_version(choice["backend"]),
            "threads": threads,
            "model": key,
            "file": self.model_file.name,
        }

    # --- pieces ------------------------------------------------------------------------------------------------

    def thresholds(self) -> dict[str, Any]:
        gate = self.ladder.structure_
        return {
            **self.ladder.thresholds(),
            "target_accept": self.ladder.target_accept_,
            "structure_gate": None if gate is None else {k: list(v) for k, v in gate.ranges.items()},
        }

    def decode(self, up: _Upload) -> tuple[Image.Image, str]:
        """Checked, decoded first frame and its format. Header checks come before any pixel is decoded."""
        if len(up.data) == 0:
            raise UploadRejected(400, "empty upload: the file has zero bytes")
        if len(up.data) > self.max_upload_bytes:
            raise UploadRejected(413, f"upload is larger than the limit of {self.max_upload_bytes} bytes")
        declared = up.content_type.split(";")[0].strip().lower()
        if declared not in ALLOWED_TYPES:
            raise UploadRejected(
                415, f"content type {declared or '(none)'!r} not accepted; send one of {', '.join(ALLOWED_TYPES)}"
            )
        try:
            # Image.open reads the header only; PIL refuses > 2 x MAX_IMAGE_PIXELS itself (a warning above 1 x,
            # left alone: ``warnings.catch_warnings`` is not thread-safe), and max_pixels is checked below.
            img = Image.open(io.BytesIO(up.data))
        except Image.DecompressionBombError as err:
            raise UploadRejected(413, f"image refused as a decompression bomb ({err})") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            raise UploadRejected(400, f"{up.filename or 'upload'}: not a decodable image") from None
        fmt = img.format or "?"
        if fmt not in ALLOWED_TYPES.values():
            raise UploadRejected(415, f"image format {fmt} not accepted; send PNG, GIF, JPEG, WebP or BMP")
        if ALLOWED_TYPES[declared] != fmt:
            raise UploadRejected(415, f"declared {declared} but the bytes are {fmt}")
        w, h = img.size
        if w * h > self.max_pixels:
            raise UploadRejected(413, f"image is {w}x{h} = {w * h} pixels; the limit is {self.max_pixels}")
        if min(w, h) < MIN_IMAGE_SIDE:  # the dataset builders reject these too: no silhouette to classify
            raise UploadRejected(422, f"image is {w}x{h} pixels; each side must be at least {MIN_IMAGE_SIDE}")
        try:
            img.seek(0)
            img.load()
        except (OSError, ValueError, SyntaxError, EOFError):
            raise UploadRejected(400, f"{up.filename or 'upload'}: truncated or corrupt image") from None
        return img, fmt

    def silhouette(self, img: Image.Image, source: str) -> tuple[np.ndarray, str]:
        """(S, S) uint8 mask exactly as in training, and which rule made it ("alpha" or "mask")."""
        mask_source = "alpha" if ("A" in img.getbands() or "transparency" in img.info) else "mask"
        try:
            obj = object_mask(img, source=source, alpha_threshold=self.alpha_threshold)
            mask = render_silhouette(obj, self.size, padding=self.padding, outline=self.outline, source=source)
            return mask, mask_source
        except StillroomError as err:
            raise UploadRejected(422, str(err)) from None

    def logits(self, mask: np.ndarray) -> np.ndarray:
        return self.forward(mask)[0]

    def forward(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(logits (1, K), features (1, D) for a knn ladder else None) of one silhouette (S, S) uint8."""
        x = normalize_uint8(np.repeat(mask[None, None], self.channels, axis=1), self.mean, self.std)  # (1, C, S, S)
        if self.knn:
            logits, feats = self._run(x)
            return logits, feats
        return self._run(x), None

    # --- the whole thing ---------------------------------------------------------------------------------------

    def predict(self, data: bytes, content_type: str, filename: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
        """(response body, telemetry row) for one upload; raises ``UploadRejected`` for client errors."""
        t0 = time.perf_counter()
        up = _Upload(data, content_type or "", filename or "")
        img, fmt = self.decode(up)
        mask, mask_source = self.silhouette(img, source=up.filename or "upload")
        gate = self.ladder.structure_
        no_structure = self.ladder.structure_problems(mask)  # before the model's verdict, which it overrides
        logits, feats = self.forward(mask)  # (1, K), (1, D) or None
        det = self.ladder.decide_detailed([logits], features=feats)[0]
        reason_text = describe(det["reason"], self.ladder.n_members_, self.ladder.signal_)
        if no_structure:
            det = {**det, "verdict": "reject", "reason": "no-structure"}
            reason_text = describe("no-structure") + ": " + "; ".join(no_structure)
        structure = None
        if gate is not None:
            structure = {"passed": not no_structure, "features": gate.features(mask), "problems": no_structure}
        z = logits[0].astype(np.float64) / self.temperature
        zi = z[: self.k_id]
        p = np.exp(zi - zi.max())
        p /= p.sum()
        order = np.argsort(-p, kind="stable")[: min(TOP_K, self.k_id)]
        top5 = [
            {"class_id": int(i), "label": self.classes[i], "name": self.names[i], "probability": float(p[i])}
            for i in order
        ]
        scores: dict[str, Any] = {"max_logit": det["mu"], "margin": det["margin"], "logits": logits[0].tolist()}
        scores["ladder_score"] = det["score"]  # what t1/t2 judged: the ladder's signal (thresholds()["signal"])
        if structure is not None:
            scores["structure"] = structure["features"]
        if self.sink is not None:
            pz = np.exp(z - z.max())
            scores["p_sink"] = float(pz[self.sink] / pz.sum())
        png = io.BytesIO()
        Image.fromarray(mask, "L").save(png, format="PNG")
        pid = uuid.uuid4().hex
        input_sha = sha256_bytes(data)
        body = {
            "id": pid,
            "verdict": det["verdict"],
            "reason": det["reason"],
            "reason_text": reason_text,
            "structure": structure,
            "prediction": {
                "class_id": det["pred"],
                "label": self.classes[det["pred"]],
                "name": self.names[det["pred"]],
            },
            "top5": top5,
            "temperature": self.temperature,
            "temperature_source": self.temperature_source,
            "mask_source": mask_source,
            "mask_rule": (
                f"alpha > {self.alpha_threshold} is object" if mask_source == "alpha" else "luminance < 128 is object"
            ),
            "scores": {k: v for k, v in scores.items() if k != "logits"},
            "thresholds": self.thresholds(),
            "input_sha256": input_sha,
            "image": {"format": fmt, "width": img.size[0], "height": img.size[1]},
            "silhouette_png": "data:image/png;base64," + base64.b64encode(png.getvalue()).decode("ascii"),
            "model": {"file": self.model_file.name, "sha256": self.model_sha256},
            "latency_ms": (time.perf_counter() - t0) * 1e3,
        }
        row = {
            "id": pid,
            "input_sha256": input_sha,
            "input_bytes": data,
            "content_type": up.content_type[:100],
            "filename": up.filename[:255],
            "mask_source": mask_source,
            "silhouette_png": png.getvalue(),
            "verdict": det["verdict"],
            "reason": det["reason"],
            "pred_index": det["pred"],
            "pred_label": self.classes[det["pred"]],
            "top5_json": top5,
            "scores_json": scores,
            "thresholds_json": self.thresholds(),
            "temperature": self.temperature,
            "weights_json": self.weights,
            "model_file": self.model_file.name,
        }
        return body, row


class _BodyLimit:
    """ASGI middleware: 413 for request bodies over ``limit`` bytes (``small_limit`` for paths starting with one of
    ``small_prefixes``), on the declared Content-Length and, for chunked or lying clients, while the body is read."""

    def __init__(
        self, app: Any, limit: int, small_limit: int | None = None, small_prefixes: tuple[str, ...] = ()
    ) -> None:
        self.app, self.default_limit = app, limit
        self.small_limit, self.small_prefixes = small_limit, small_prefixes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        limit = self.default_limit
        if self.small_limit is not None and str(scope.get("path", "")).startswith(self.small_prefixes):
            limit = self.small_limit
        headers = dict(scope.get("headers") or [])
        try:
            declared = int(headers.get(b"content-length", b"-1"))
        except ValueError:
            declared = -1
        if declared > limit:
            msg = f"request body is {declared} bytes; the limit is {limit}"
            await JSONResponse({"detail": msg}, status_code=413)(scope, receive, send)
            return
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, f"request body exceeds the limit of {limit} bytes")
            return message

        await self.app(scope, limited, send)


def create_app(
    run_dir: str | Path,
    db_path: str | Path | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    model: Literal["fp32", "int8"] = "fp32",
    threads: int | None = None,
    store_inputs: bool = True,
    backend: str = "auto",
):
    """The FastAPI app serving ``run_dir``. ``db_path``: telemetry SQLite file (default ``RUN/telemetry.sqlite``).

    ``store_inputs``: keep the uploaded bytes in telemetry (needed to export corrections with the original image;
    without them the 128 px silhouette is exported instead). ``backend``: the runtime (``Predictor``; auto = the
    fastest that passed export's checks).
    """
    predictor = Predictor(run_dir, model=model, threads=threads, max_upload_bytes=max_upload_bytes,
                          max_pixels=max_pixels, backend=backend)  # fmt: skip
    telemetry = Telemetry(Path(db_path) if db_path else Path(run_dir) / "telemetry.sqlite")
    try:
        page = resources.files("stillroom.deploy").joinpath("static/index.html").read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        raise StillroomError("stillroom/deploy/static/index.html is missing from the installed package") from None
    started = time.time()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        telemetry.close()

    app = FastAPI(title="Stillroom", version="1", docs_url="/docs", redoc_url=None, lifespan=lifespan)
    app.state.predictor, app.state.telemetry = predictor, telemetry
    app.add_middleware(
        _BodyLimit,
        limit=predictor.max_upload_bytes + _MULTIPART_SLACK,
        small_limit=FEEDBACK_MAX_BYTES,
        small_prefixes=("/feedback/",),
    )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_reply(exc)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": predictor.model_file.name, "uptime_s": round(time.time() - started, 1)}

    @app.get("/info")
    def info() -> dict[str, Any]:
        return {
            # The run's name and what identifies its artefacts; never its absolute path on this machine.
            "run": {
                "name": predictor.run_dir.resolve().name,
                "weights_sha256": predictor.weights_sha256,
                "model_sha256": predictor.model_sha256,
                "ladder_sha256": predictor.ladder_sha256,
                "knn_bank_sha256": predictor.ladder.knn_record_["bank_sha256"] if predictor.ladder.uses_knn else None,
                "rmd_sha256": predictor.ladder.rmd_record_["sha256"] if predictor.ladder.uses_rmd else None,
            },
            "classes": predictor.classes[: predictor.k_id],
            "display_names": predictor.names[: predictor.k_id],
            "sink": predictor.sink is not None,
            "img_size": predictor.size,
            "model": {"file": predictor.model_file.name, "sha256": predictor.model_sha256},
            "runtime": predictor.runtime,
            "weights": predictor.weights,
            "thresholds": predictor.thresholds(),
            "temperature": predictor.temperature,
            "temperature_source": predictor.temperature_source,
            "limits": {"max_upload_bytes": predictor.max_upload_bytes, "max_pixels": predictor.max_pixels},
            "accepted_types": list(ALLOWED_TYPES),
            "feedback_actions": list(FEEDBACK_ACTIONS),
        }

    @app.get("/metrics")
    def metrics() -> dict[str, Any]:
        return {**telemetry.counts(), "uptime_s": round(time.time() - started, 1)}

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        ctype = request.headers.get("content-type", "")
        if not ctype.lower().startswith("multipart/form-data"):
            raise HTTPException(415, "send the image as multipart/form-data in the field 'file'")
        form = await request.form(max_files=1, max_fields=8)
        try:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise HTTPException(422, "multipart field 'file' with an image is missing")
            data = await upload.read(max_upload_bytes + 1)
            try:
                body, row = await run_in_threadpool(
                    predictor.predict, data, upload.content_type or "", upload.filename or ""
                )
            except UploadRejected as err:
                raise HTTPException(err.status, err.message) from None
        finally:
            await form.close()
        if not store_inputs:
            row["input_bytes"] = None
        await run_in_threadpool(telemetry.record_prediction, row)
        return body

    @app.post("/feedback/{prediction_id}")
    def feedback(prediction_id: str, fb: Feedback) -> dict[str, Any]:
        pred = telemetry.get_prediction(prediction_id) if _PREDICTION_ID.fullmatch(prediction_id) else None
        if pred is None:
            raise HTTPException(404, f"no prediction with id {_printable(prediction_id, 40)!r}")
        label = fb.label
        if fb.action == "correct":
            if label is None:
                raise HTTPException(422, f"body.label: required with 'correct' (one of the {predictor.k_id} classes)")
            if label not in predictor.classes[: predictor.k_id]:
                shown = _printable(label, 40)
                raise HTTPException(422, f"body.label: {shown!r} is not one of the model's {predictor.k_id} classes")
        elif label is not None:  # was silently dropped: say that this action takes no label
            raise HTTPException(
                422,
                f"body.label: only the action 'correct' takes a label ({fb.action!r} uses "
                + ("the model's own label)" if fb.action == "confirm" else "none)"),
            )
        elif fb.action == "confirm":
            label = pred["pred_label"]
        else:
            label = None
        stored = telemetry.record_feedback(prediction_id, fb.action, label, fb.comment)
        return {"id": prediction_id, "feedback_id": stored["id"], "action": fb.action, "label": label, "stored": True}

    return app
