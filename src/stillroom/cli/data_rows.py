"""``stillroom data add-transfer`` and ``data add-style``: an index plus rows of another dataset, without a class (a
KD transfer set) or with one (drawings of the served classes in a second style; issue 14 item 1). Registered by
``cli.data.register``."""

from __future__ import annotations

from pathlib import Path

import typer

from stillroom._progress import console

__all__ = ["register_added_rows"]


def register_added_rows(data_app: typer.Typer) -> None:
    """Attach ``add-transfer`` and ``add-style`` to ``data``."""

    @data_app.command("add-transfer")
    def add_transfer_cmd(
        id_index: Path = typer.Argument(..., help="ID dataset directory (the student's classes)"),
        source: Path = typer.Argument(..., help="dataset whose images join as transfer rows (their classes unused)"),
        out: Path = typer.Option(..., "--out", help="dataset directory to write: the ID index + transfer rows"),
        split: list[str] = typer.Option([], "--split", help="source split(s) to take (repeatable; default: all)"),
        repeat: int = typer.Option(1, help="copies of each source image (its share of an epoch)"),
        exclude_classes_of: Path | None = typer.Option(
            None, "--exclude-classes-of", help="leave out source rows of this index's classes (e.g. the ID index)"
        ),
    ) -> None:
        """Add a KD transfer set: SOURCE's images as rows without a class that distilled students learn from
        through their teachers' targets only (export the teachers' soft labels on OUT, then train on OUT)."""
        from stillroom.data.index import SPLITS
        from stillroom.data.transfer import add_transfer_rows

        index = add_transfer_rows(id_index, source, out, tuple(split) or SPLITS, repeat, exclude_classes_of)
        got = index.recipe["transfer"]
        counts = index.meta["counts"]["per_split"]
        console.print(
            f"[green]wrote[/] {index.root}: train/val/test = {counts['train']}/{counts['val']}/{counts['test']}, "
            f"transfer = {counts['transfer']} ({got['images']} images x {repeat}, {got['excluded_classes']} classes "
            "excluded)"
        )

    @data_app.command("add-style")
    def add_style_cmd(
        id_index: Path = typer.Argument(..., help="ID dataset directory (the served classes)"),
        source: Path = typer.Argument(..., help="drawings of those classes in another style (data build style-*)"),
        out: Path = typer.Option(..., "--out", help="dataset directory to write: the ID index + labelled rows"),
        split: list[str] = typer.Option([], "--split", help="source split(s) to take (repeatable; default: all)"),
        repeat: int = typer.Option(1, help="copies of each source image (its share of an epoch)"),
    ) -> None:
        """Add drawings of the served classes in a second style as labelled train rows (every model trained on OUT
        learns from them); score the result on a style it has not seen. Run it again on OUT to add a third."""
        from stillroom.data.index import SPLITS
        from stillroom.data.transfer import add_style_rows, extra_train_sources

        index = add_style_rows(id_index, source, out, tuple(split) or SPLITS, repeat)
        sources = extra_train_sources(index.recipe)
        counts = index.meta["counts"]["per_split"]
        console.print(
            f"[green]wrote[/] {index.root}: train/val/test = {counts['train']}/{counts['val']}/{counts['test']} "
            f"({sources[-1]['images']} drawings x {repeat} added to train; styles added so far: {len(sources)})"
        )
