"""`python -m signray.train`: train one config, in this process or as DDP under Ray Train."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from signray.checkpoint import checkpoint_paths, load_checkpoint, model_from_checkpoint
from signray.cli import add_config_arguments, config_from_args, user_errors_exit
from signray.config import TrainConfig, save_config
from signray.data import build_loader
from signray.engine import LossWeights, evaluate
from signray.errors import ConfigError
from signray.inputs import load_inputs
from signray.loop import LoopResult, train_loop
from signray.reporting import FileReporter, batch_progress

__all__ = [
    "main",
    "build_parser",
    "check_output_dir",
    "check_resume",
    "evaluate_checkpoint",
    "write_learning_curve",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m signray.train",
        description="Train one sign-recognition model (transformer on keypoints, iv3_gru on "
        "InceptionV3 features).",
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace checkpoints already in --output-dir instead of refusing",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar over each epoch's batches (default: on when stderr is a terminal)",
    )
    ray = parser.add_argument_group("Ray (only with --ray-workers > 1)")
    ray.add_argument("--address", default=None, help="join this Ray cluster (auto|HOST:PORT)")
    ray.add_argument(
        "--storage-path", default="ray_results", help="where Ray Train keeps run state"
    )
    ray.add_argument("--cpus-per-worker", type=float, default=1.0)
    ray.add_argument("--dashboard-host", default="127.0.0.1")
    return parser


def check_output_dir(cfg: TrainConfig, *, overwrite: bool) -> None:
    """Refuse to silently replace checkpoints of an earlier run."""
    out = Path(cfg.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError([f"`output_dir` {out} exists and is not a folder"])
    existing = [p for p in checkpoint_paths(out, cfg.spec.class_name) if p.exists()]
    if existing and cfg.resume is None and not overwrite:
        raise ConfigError(
            [
                f"{existing[0]} is already there from an earlier run; pass "
                f"--resume {checkpoint_paths(out, cfg.spec.class_name)[1]} to continue it, "
                "--overwrite to replace it, or another --output-dir"
            ]
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".signray-write-test"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise ConfigError([f"`output_dir` {out} is not writable: {err.strerror}"]) from None


def check_resume(cfg: TrainConfig, input_dim: int) -> None:
    """Refuse a `--resume` checkpoint that cannot continue this run, before anything is written.

    It is loaded with weights_only=True (a crafted pickle is refused, never run) and must be of
    the same model, input width and architecture.
    """
    if cfg.resume is None:
        return
    state = load_checkpoint(cfg.resume)
    where = f"`--resume` {cfg.resume}"
    saved_model = state.get("model_name")
    if saved_model != cfg.model:
        raise ConfigError(
            [f"{where} is a checkpoint of model {saved_model!r}, but the run is for {cfg.model!r}"]
        )
    saved = state.get("config") or {}
    problems = [
        f"{where} was trained with {name}={saved[name]!r}, but the config has {name}={value!r}"
        for name, value in cfg.arch.items()
        if name in saved and saved[name] != value
    ]
    if int(state.get("input_dim", input_dim)) != input_dim:
        problems.append(
            f"{where} was trained on D={state['input_dim']} features per frame, but the data "
            f"has D={input_dim}"
        )
    if problems:
        raise ConfigError(problems)


def evaluate_checkpoint(path: Path, val, batch_size: int) -> dict[str, float]:
    """Reload a saved checkpoint and evaluate it on the whole split in this process."""
    model, cfg, _ = model_from_checkpoint(path)
    loader = build_loader(val, batch_size=batch_size, train=False)
    weights = LossWeights(cfg.gloss_weight, cfg.cat_weight, cfg.label_smoothing)
    return evaluate(model, loader, device=next(model.parameters()).device, weights=weights)


def _run_ray(cfg: TrainConfig, data, args) -> LoopResult:
    from signray.launch.cluster import init_ray
    from signray.launch.ray_train import export_checkpoints, run_torch_trainer

    init_ray(args.address, dashboard_host=args.dashboard_host)
    name = f"train-{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    result = run_torch_trainer(
        cfg, data, storage_path=args.storage_path, name=name, cpus_per_worker=args.cpus_per_worker
    )
    best, _ = export_checkpoints(result, cfg.output_dir, cfg.spec.class_name)
    history = (
        result.metrics_dataframe.to_dict("records") if result.metrics_dataframe is not None else []
    )
    last = result.metrics or {}
    return LoopResult(
        best_val_gloss_acc=float(last.get("best_val_gloss_acc", -1.0)),
        best_epoch=int(last.get("best_epoch", 0)),
        epochs_run=len(history),
        stopped_early=len(history) < cfg.epochs,
        last_metrics=last,
        history=history,
    )


def run(cfg: TrainConfig, args: argparse.Namespace) -> LoopResult:
    check_output_dir(cfg, overwrite=args.overwrite)
    data = load_inputs(cfg)  # every data problem surfaces here, before any Ray start
    check_resume(cfg, data[0].feature_dim)  # before anything in output_dir is replaced
    save_config(cfg, Path(cfg.output_dir) / "config.yaml")
    train, val = data
    print(
        f"signray.train: model {cfg.model}, {len(train)} train / {len(val)} val clips, "
        f"D={train.feature_dim}, {cfg.epochs} epochs, output {cfg.output_dir}",
        flush=True,
    )
    if cfg.ray_workers > 1:
        return _run_ray(cfg, data, args)
    reporter = FileReporter(
        cfg.output_dir,
        cfg.spec.class_name,
        total_epochs=cfg.epochs,
        log_csv=cfg.log_csv,
        resume=cfg.resume,
    )
    progress = batch_progress(cfg.epochs, enabled=getattr(args, "progress", None))
    return train_loop(cfg, reporter, data, progress=progress)


def write_learning_curve(cfg: TrainConfig) -> Path | None:
    """`{output_dir}/learning_curve.png` from the run's CSV log (None when there is no log)."""
    from signray.report import plot_learning_curve  # matplotlib only when a run finishes

    log = (
        Path(cfg.log_csv)
        if cfg.log_csv
        else Path(cfg.output_dir) / f"{cfg.spec.class_name}_log.csv"
    )
    if not log.is_file():
        return None
    return plot_learning_curve(log, Path(cfg.output_dir) / "learning_curve.png")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with user_errors_exit():
        cfg = config_from_args(args)
        if cfg.resume is not None:
            cfg = dataclasses.replace(cfg, resume=str(Path(cfg.resume).resolve()))
        result = run(cfg, args)
        best_path, _ = checkpoint_paths(cfg.output_dir, cfg.spec.class_name)
        print(
            f"done in {time.perf_counter() - start:.1f}s: {result.epochs_run} epochs"
            f"{' (stopped early)' if result.stopped_early else ''}, best val_gloss_acc "
            f"{result.best_val_gloss_acc:.4f} at epoch {result.best_epoch}; best checkpoint "
            f"{best_path}",
            flush=True,
        )
        curve = write_learning_curve(cfg)
        if curve is not None:
            print(f"learning curve: {curve}", flush=True)
        if cfg.smoke_test:
            _, val = load_inputs(cfg)
            reloaded = evaluate_checkpoint(best_path, val, cfg.batch_size)
            print(
                f"smoke test: reloaded {best_path.name}: val_gloss_acc "
                f"{reloaded['val_gloss_acc']:.4f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
