"""The self-contained report embeds the run's own images, and nothing from outside the run folder."""

from __future__ import annotations

from cuelab.report.html import markdown_to_html

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def test_images_inside_the_run_are_embedded_and_outside_ones_are_not(tmp_path):
    run, outside = tmp_path / "run", tmp_path / "secret.png"
    (run / "report" / "figures").mkdir(parents=True)
    (run / "attention").mkdir()
    (run / "report" / "figures" / "a.png").write_bytes(PNG)
    (run / "attention" / "b.png").write_bytes(PNG)
    outside.write_bytes(b"SECRET" * 10)
    md = "![a](figures/a.png)\n\n![b](../attention/b.png)\n\n![x](../../secret.png)\n"
    page = markdown_to_html(md, run / "report", "t <b>")
    assert page.count("data:image/png;base64,") == 2
    assert "../../secret.png" in page and "U0VDUkVU" not in page  # base64 of SECRET never inlined
    assert "<title>t &lt;b&gt;</title>" in page
