"""Deployment: ONNX export and int8, latency benchmarks, the strictness ladder, the prediction service with its
SQLite telemetry, and the export of user feedback as a new dataset (seed 000 §4.2-4.3; REFERENCE 5).

Submodules import their heavy dependencies (onnxruntime, fastapi) themselves, so ``import stillroom.deploy`` stays
cheap and the rest of Stillroom works without the deployment extras.
"""

__all__: list[str] = []
