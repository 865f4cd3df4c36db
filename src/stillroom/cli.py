"""Command-line interface (placeholder; filled in by the skeleton work)."""


def main() -> None:
    raise SystemExit("not yet")
