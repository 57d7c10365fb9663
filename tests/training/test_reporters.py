"""The single run's per-epoch progress bar and its learning-curve PNG."""

from __future__ import annotations

import io

from signray.train import main as train_main
from signray.training.reporters import batch_progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_off_when_not_a_terminal():
    assert batch_progress(3, stream=io.StringIO()) is None
    assert batch_progress(3, enabled=False, stream=_Tty()) is None


def test_progress_is_on_for_a_terminal_and_counts_batches():
    stream = _Tty()
    wrap = batch_progress(3, stream=stream)
    assert wrap is not None
    assert list(wrap(range(4), 1)) == [0, 1, 2, 3]
    text = stream.getvalue()
    assert "epoch 2/3" in text and "/4 [" in text and "batch" in text  # total known: ETA


def test_train_cli_forced_progress_and_learning_curve(tmp_path, capsys, assert_png):
    out = tmp_path / "run"
    args = ["--smoke-test", "--progress", "--output-dir", str(out), "--num-threads", "1"]
    args += ["--d-model", "32", "--n-heads", "2", "--depth", "1", "--ff-dim", "32"]
    assert train_main(args) == 0
    captured = capsys.readouterr()
    assert "epoch 1/2" in captured.err and "batch" in captured.err  # the tqdm bar
    assert "learning curve:" in captured.out
    assert_png(out / "learning_curve.png")
