"""Report built from a synthetic run directory: tables hold the written numbers, PNGs are real and embedded."""

import base64
import json

import pytest

from lmdistill.errors import UserError
from lmdistill.report import build_report
from lmdistill.report.build import format_value
from lmdistill.report.document import Table, render_html, render_markdown

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CONFIG_TEXT = "# tiny run\nstudent:\n  layers: 2\nloss:\n  terms: [kl, ce]   # weights | 0.5\ntemperature: 2.0\n"


def write_run(run_dir, *, with_eval_lines=True, with_evaluation=True, extra_lines=()):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(CONFIG_TEXT)
    lines = []
    for step in (1, 2, 3):
        lines.append({"step": step, "split": "train", "loss": 3.0 / step, "loss/kl": 2.0 / step, "loss/ce": 1.0 / step,
                      "lr": 1e-3, "tokens_per_second": 1500.0 + step, "elapsed_s": 0.5 * step})
        if with_eval_lines and step != 1:
            lines.append({"step": step, "split": "eval", "eval/perplexity": 40.0 / step, "eval/top1_agreement": 0.1 * step})
    text = "\n".join(json.dumps(line) for line in lines) + "\n" + "".join(f"{line}\n" for line in extra_lines)
    (run_dir / "metrics.jsonl").write_text(text)
    if with_evaluation:
        models = {
            "teacher": {"parameters": 1_000_000, "size_on_disk_bytes": 4_000_000, "latency_ms_per_example": 8.0,
                        "tokens_per_second": 3200.0, "perplexity": 12.5},
            "student": {"parameters": 250_000, "size_on_disk_bytes": 1_000_000, "latency_ms_per_example": 2.0,
                        "tokens_per_second": 12800.0, "perplexity": 15.25, "top1_agreement": 0.8125,
                        "mean_token_kl": 0.3333, "rougeL": 0.41},
            "baseline": {"parameters": 250_000, "perplexity": 19.75},
        }
        (run_dir / "evaluation.json").write_text(json.dumps({"models": models}))
    return run_dir


def table_row(markdown: str, label: str) -> list[str]:
    """Cells of the Markdown table row whose first cell is ``label``."""
    for line in markdown.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == label:
            return cells[1:]
    raise AssertionError(f"no table row {label!r} in:\n{markdown}")


def test_full_report_tables_plots_and_html(tmp_path):
    run_dir = write_run(tmp_path / "run")
    markdown_path, html_path = build_report(run_dir)
    assert markdown_path == run_dir / "report" / "report.md"
    assert html_path == run_dir / "report" / "report.html"
    markdown = markdown_path.read_text()

    assert "| metric | teacher | student | baseline |" in markdown
    assert table_row(markdown, "Parameters") == ["1,000,000", "250,000", "250,000"]
    assert table_row(markdown, "Compression vs teacher") == ["1.00×", "4.00×", "4.00×"]
    assert table_row(markdown, "Size on disk (bytes)") == ["4,000,000", "1,000,000", "—"]
    assert table_row(markdown, "Forward speed-up vs teacher") == ["1.00×", "4.00×", "—"]
    assert table_row(markdown, "Tokens per second (forward)") == ["3,200.0", "12,800.0", "—"]
    assert table_row(markdown, "Perplexity") == ["12.5000", "15.2500", "19.7500"]
    assert table_row(markdown, "Top-1 agreement with teacher") == ["—", "0.8125", "—"]
    assert table_row(markdown, "rougeL") == ["—", "0.4100", "—"]
    # final training values at the last step, and every eval line
    assert table_row(markdown, "loss/kl") == [format_value(2.0 / 3)] == ["0.6667"]
    assert table_row(markdown, "tokens_per_second") == ["1,503.0"]
    assert table_row(markdown, "lr") == ["1.000e-03"]
    assert "| step | perplexity | top1_agreement |" in markdown
    assert table_row(markdown, "2") == ["20.0000", "0.2000"]
    assert table_row(markdown, "3") == ["13.3333", "0.3000"]
    # the config verbatim, fenced
    assert "```yaml\n" + CONFIG_TEXT + "```" in markdown

    html = html_path.read_text()
    for name in ("loss.png", "eval_metrics.png", "model_comparison.png"):
        png = (run_dir / "report" / name).read_bytes()
        assert png.startswith(PNG_SIGNATURE)
        assert f"]({name})" in markdown
        assert "data:image/png;base64," + base64.b64encode(png).decode("ascii") in html
    from matplotlib.image import imread

    assert imread(run_dir / "report" / "loss.png").shape[:2] == (400, 700)
    assert "<td>0.8125</td>" in html and "<td>1,000,000</td>" in html
    assert "weights | 0.5" in html and "<pre><code># tiny run" in html
    assert "http" not in html.replace('"http://www.w3.org', "")  # no external assets
    assert not list((run_dir / "report").glob("*.tmp"))


def test_missing_pieces_are_skipped_with_a_line(tmp_path):
    first = write_run(tmp_path / "run")
    build_report(first)
    run_dir = write_run(tmp_path / "run", with_eval_lines=False, with_evaluation=False)
    (run_dir / "evaluation.json").unlink()
    (run_dir / "config.yaml").unlink()
    markdown_path, html_path = build_report(run_dir)
    markdown = markdown_path.read_text()
    assert "No evaluation lines in metrics.jsonl; evaluation table and plot skipped." in markdown
    assert "No evaluation.json (or no models in it); model comparison skipped." in markdown
    assert "No config.yaml in the run directory." in markdown
    report_dir = run_dir / "report"
    assert (report_dir / "loss.png").exists()
    # plots from the earlier, fuller build are removed rather than left contradicting this report
    assert not (report_dir / "eval_metrics.png").exists() and not (report_dir / "model_comparison.png").exists()
    assert html_path.read_text().count("data:image/png;base64,") == 1


def test_empty_metrics_and_truncated_last_line(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text("")
    markdown = build_report(run_dir)[0].read_text()
    assert "No training lines in metrics.jsonl" in markdown
    write_run(run_dir, extra_lines=['{"step": 4, "split": "tra'])
    markdown = build_report(run_dir)[0].read_text()
    assert "Ignored an unreadable last line (6) of metrics.jsonl" in markdown
    assert "steps 1 to 3" in markdown


def test_missing_metrics_raises_user_error(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(CONFIG_TEXT)
    with pytest.raises(UserError, match=r"metrics\.jsonl not found: .* is not a training run directory"):
        build_report(run_dir)
    with pytest.raises(UserError, match="does not exist"):
        build_report(tmp_path / "nowhere")


def test_malformed_inputs_raise_user_error(tmp_path):
    run_dir = write_run(tmp_path / "run", extra_lines=["not json", '{"step": 9, "split": "train"}'])
    with pytest.raises(UserError, match=r"metrics\.jsonl line 6 is not valid JSON"):
        build_report(run_dir)
    run_dir = write_run(tmp_path / "run2")
    (run_dir / "evaluation.json").write_text('{"teacher": {}}')
    with pytest.raises(UserError, match="evaluation.json needs the form"):
        build_report(run_dir)


def test_text_tables_are_left_aligned_and_figure_tables_right_aligned():
    figures = Table(["model", "perplexity"], [["student", "6.06"]])
    answers = Table(["model", "answer"], [["student", "Once upon a time"]], numeric=False)
    assert render_markdown([figures]).splitlines()[1] == "| --- | ---: |"
    assert render_markdown([answers]).splitlines()[1] == "| --- | --- |"
    page = render_html([figures, answers], "t")
    assert page.count('<table class="text">') == 1 and page.count("<table>") == 1
