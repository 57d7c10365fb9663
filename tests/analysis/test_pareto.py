from __future__ import annotations

import pandas as pd

from signray.analysis.pareto import format_front, pareto_front, plot_pareto


def _table():
    return pd.DataFrame(
        {
            "trial_id": ["a", "b", "c", "d", "e"],
            "status": ["TERMINATED"] * 4 + ["ERROR"],
            "best_val_gloss_acc": [0.9, 0.8, 0.7, 0.85, 0.99],
            "latency_ms_per_clip": [2.0, 1.0, 1.5, 2.5, 0.1],
        }
    )


def test_front_keeps_only_trials_no_other_beats_on_every_objective():
    front = pareto_front(_table(), ["latency_ms_per_clip"])
    # c (worse and slower than b) and d (worse and slower than a) are dominated; e errored.
    assert list(front["trial_id"]) == ["a", "b"]
    text = format_front(front, ["latency_ms_per_clip"])
    assert text.splitlines()[0].startswith("Pareto front (2 trials")
    assert "a: best_val_gloss_acc 0.9000, latency_ms_per_clip 2" in text


def test_front_plot_is_written(tmp_path):
    path = plot_pareto(_table(), ["latency_ms_per_clip"], tmp_path / "front.png")
    assert path.is_file() and path.stat().st_size > 1000
