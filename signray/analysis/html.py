"""The report's ``index.html``: every plot, the best trial, its evaluation and the trials table."""

from __future__ import annotations

import html
import json
from typing import Any

import pandas as pd

from signray.analysis.experiment import Experiment, TrialRun
from signray.layout import EVALUATION_FILES, REPORT_FILES, ExperimentFiles

__all__ = ["report_page"]


def _table_html(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, escape=True, float_format=lambda v: f"{v:.4g}", na_rep="")


def _evaluation_html(exp: Experiment) -> str:
    folder = exp.files.evaluation
    try:
        m = json.loads((folder / EVALUATION_FILES["metrics"]).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return ""
    rel = f"../{ExperimentFiles.EVALUATION_DIR}"  # report/ and evaluation/ are siblings
    keys = [k for k in m if k.startswith(("gloss_", "cat_", "loss", "count"))]
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(m[k]))}</td></tr>" for k in keys
    )
    images = "".join(
        f'<img src="{html.escape(rel)}/{name}" alt="{name}">'
        for name in (EVALUATION_FILES["confusion_gloss"], EVALUATION_FILES["confusion_cat"])
        if (folder / name).is_file()
    )
    links = " ".join(
        f'<a href="{html.escape(rel)}/{name}">{name}</a>'
        for name in (
            EVALUATION_FILES["per_gloss"],
            EVALUATION_FILES["confused_pairs"],
            EVALUATION_FILES["metrics"],
        )
        if (folder / name).is_file()
    )
    checkpoint = html.escape(str(m.get("checkpoint", "")))
    return (
        f"<h2>Best checkpoint on the validation split</h2><p>{checkpoint}</p>"
        f"<table class='kv'>{rows}</table><p>{links}</p>{images}"
    )


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
img{max-width:100%;border:1px solid #ddd;margin:.5em 0;display:block}
table{border-collapse:collapse;font-size:13px;margin:.5em 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3} .kv th{text-align:left} .note{color:#555;font-size:13px}
"""


def report_page(
    exp: Experiment,
    best: TrialRun,
    table: pd.DataFrame,
    *,
    metric: str,
    importance_note: str,
    pareto: bool = False,
) -> str:
    """The whole page; images are the report folder's PNGs, referenced by name."""
    counts = table["status"].value_counts().to_dict()
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    best_rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in {
            **best.params,
            f"best {metric}": best.best(metric),
            "epochs": best.epochs,
        }.items()
    )
    figures = [
        ("Learning curves", "curves", "Dashed lines ending in x: trials stopped early."),
        ("Best so far", "best_so_far", ""),
        (
            "Hyperparameters vs accuracy",
            "params",
            "Hollow markers: trials stopped early (scored by their best epoch before the stop).",
        ),
        ("Hyperparameter importance", "importance", importance_note),
    ]
    if pareto:
        figures.insert(
            0,
            ("Pareto front", "pareto", "Red: trials no other trial beats on every objective "
             "(pareto.csv lists them)."),
        )  # fmt: skip
    body = "".join(
        f"<h2>{title}</h2><img src='{REPORT_FILES[key]}' alt='{REPORT_FILES[key]}'>"
        f"<p class='note'>{html.escape(text)}</p>"
        for title, key, text in figures
    )
    name = html.escape(exp.path.name)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>signray report: {name}</title>
<style>{_CSS}</style></head><body>
<h1>Experiment {name}</h1>
<p>{len(exp.trials)} trials ({html.escape(summary)}); metric {html.escape(metric)}, maximised.
Folder: {html.escape(str(exp.path))}</p>
<h2>Best trial: {html.escape(best.trial_id)}</h2><table class="kv">{best_rows}</table>
{_evaluation_html(exp)}
{body}
<h2>Trials</h2>{_table_html(table)}
</body></html>
"""
