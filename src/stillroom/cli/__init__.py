"""``stillroom`` command line (typer + rich). Expected errors print one clear message and exit 2, no traceback.

The top layer (import-linter contract in pyproject.toml): command modules may import every pipeline stage, no
stage imports them. One module per stage: ``data``, ``train`` (also soft labels, demo), ``distill``, ``evaluate``
(also sweep, compare, report, calibrate) and ``deploy``.
"""

from __future__ import annotations

import sys

import typer

from stillroom._io import StillroomError

__all__ = ["app", "main"]

app = typer.Typer(
    help="Stillroom: distil image classifiers into small, calibrated students.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
data_app = typer.Typer(help="Build and import datasets into the canonical index.", no_args_is_help=True)
build_app = typer.Typer(help="Build a dataset from a public source.", no_args_is_help=True)
soft_app = typer.Typer(help="Soft-label stores: export teacher logits, check alignment.", no_args_is_help=True)
app.add_typer(data_app, name="data")
data_app.add_typer(build_app, name="build")
app.add_typer(soft_app, name="softlabels")


def _register_plugins() -> None:
    """One module per pipeline stage; each adds its commands to the apps above."""
    from stillroom.cli import data, deploy, distill, evaluate, train

    train.register(app, soft_app)
    evaluate.register(app)
    distill.register(app)
    data.register(data_app, build_app, app)
    deploy.register(app)


_register_plugins()


def main() -> None:
    try:
        app()
    except StillroomError as err:
        sys.stderr.write(f"error: {err}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; finished epochs are saved, continue with --resume\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
