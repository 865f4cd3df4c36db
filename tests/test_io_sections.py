"""`replace_marked_section`: benchmark write-ups replace their own marked block and keep the rest of the file."""

from __future__ import annotations

from stillroom._io import replace_marked_section


def test_replace_then_append(tmp_path):
    md = tmp_path / "B.md"
    replace_marked_section(md, "<!-- a:begin -->", "<!-- a:end -->", "<!-- a:begin -->\nv1\n<!-- a:end -->", "## A\n\n"
                           "<!-- a:begin -->\nv1\n<!-- a:end -->")  # fmt: skip
    md.write_text(md.read_text() + "\nhand-written tail\n")
    replace_marked_section(md, "<!-- a:begin -->", "<!-- a:end -->", "<!-- a:begin -->\nv2\n<!-- a:end -->")
    text = md.read_text()
    assert text.count("<!-- a:begin -->") == 1 and "v2" in text and "v1" not in text
    assert text.startswith("# Benchmarks\n\n## A\n") and text.endswith("hand-written tail\n")
