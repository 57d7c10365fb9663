"""Train one sign-recognition model (transformer on keypoints, iv3_gru on InceptionV3
features), in this process or as DDP under Ray Train (``python -m signray.train``).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from signray.cli import add_cluster_flags, add_dataclass_flags, command, command_parser
from signray.config import TrainConfig, save_config
from signray.config.flags import add_config_flags, config_from_args
from signray.config.search import SearchOptions
from signray.data import Split, build_loader
from signray.errors import ConfigError
from signray.layout import RunFiles
from signray.storage import Location, RemotePath, absolute, as_location, writable_problem
from signray.training.checkpoint import load_checkpoint, model_from_checkpoint
from signray.training.device import select_device
from signray.training.inputs import check_inputs, load_inputs
from signray.training.loop import LoopResult, resume_problems, train_loop
from signray.training.precision import resolve_precision
from signray.training.reporters import FileReporter, batch_progress
from signray.training.steps import LossWeights, evaluate
from signray.tuning.address import cluster_target
from signray.tuning.resources import TrialShape

__all__ = ["build_parser", "check_output_dir", "evaluate_checkpoint", "main", "run", "train"]


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("signray.train", __doc__)
    add_config_flags(parser)
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
    ray.add_argument(
        "--storage-path",
        default="ray_results",
        help="folder or object-store URI where Ray Train keeps run state",
    )
    ray.add_argument("--cpus-per-worker", type=float, default=1.0)
    # The same flag, help and type as the search's (SearchOptions.worker_failures).
    other = [f.name for f in dataclasses.fields(SearchOptions) if f.name != "worker_failures"]
    add_dataclass_flags(ray, SearchOptions, exclude=other)
    add_cluster_flags(parser)
    return parser


def check_output_dir(cfg: TrainConfig, *, overwrite: bool) -> None:
    """Refuse to silently replace checkpoints of an earlier run."""
    files = RunFiles(cfg.output_dir, cfg.spec.class_name)
    out = files.root
    remote = isinstance(out, RemotePath)
    if remote and (problem := writable_problem(out, "--output-dir")):  # reachable, in seconds
        raise ConfigError([problem])
    if not remote and out.exists() and not out.is_dir():
        raise ConfigError([f"`output_dir` {out} exists and is not a folder"])
    existing = [p for p in (files.best, files.last) if p.exists()]
    if existing and cfg.resume is None and not overwrite:
        raise ConfigError(
            [
                f"{existing[0]} is already there from an earlier run; pass "
                f"--resume {files.last} to continue it, --overwrite to replace it, or another "
                "--output-dir"
            ]
        )
    if remote:
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".signray-write-test"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise ConfigError([f"`output_dir` {out} is not writable: {err.strerror}"]) from None


def evaluate_checkpoint(path: Location, val: Split, batch_size: int) -> dict[str, float]:
    """Reload a saved checkpoint and evaluate it on the whole split in this process."""
    model, cfg, _ = model_from_checkpoint(path)
    loader = build_loader(val, batch_size=batch_size, train=False)
    weights = LossWeights(cfg.gloss_weight, cfg.cat_weight, cfg.label_smoothing)
    return evaluate(model, loader, device=next(model.parameters()).device, weights=weights)


def _run_ray(cfg: TrainConfig, summary, args) -> LoopResult:
    from signray.tuning.cluster import init_ray
    from signray.tuning.launcher import export_checkpoints, run_torch_trainer, set_train_environment
    from signray.tuning.resources import check_cluster_fits
    from signray.tuning.trial_data import prepare_trial_data

    set_train_environment()
    init_ray(
        args.address, dashboard=args.dashboard, dashboard_host=args.dashboard_host,
        dashboard_port=args.dashboard_port,
    )  # fmt: skip
    # Exit 2 now if the cluster cannot place the workers (Ray Train would wait for them).
    check_cluster_fits(
        TrialShape.for_config(cfg, args.cpus_per_worker), args.address, what="training run"
    )
    data = prepare_trial_data(cfg, summary)
    name = f"train-{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    result = run_torch_trainer(
        cfg,
        data,
        storage_path=args.storage_path,
        name=name,
        cpus_per_worker=args.cpus_per_worker,
        max_failures=getattr(args, "worker_failures", 0),
    )
    export_checkpoints(result, cfg.output_dir, cfg.spec.class_name)
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


def train(cfg: TrainConfig, args: argparse.Namespace) -> LoopResult:
    """Check the outputs and inputs, then train in this process or under Ray Train."""
    files = RunFiles(cfg.output_dir, cfg.spec.class_name)
    check_output_dir(cfg, overwrite=args.overwrite)
    if cfg.ray_workers > 1:
        problems = SearchOptions(worker_failures=getattr(args, "worker_failures", 0)).problems(1)
        if problem := writable_problem(args.storage_path, "--storage-path"):
            problems.append(problem)
        shape = TrialShape.for_config(cfg, args.cpus_per_worker)
        problems += shape.problems()
        if cfg.use_gpu and not problems and cluster_target(args.address).local:
            problems += shape.local_gpu_problems(
                "training run"
            )  # the cluster started here has these GPUs
        if problems:
            raise ConfigError(problems)
        from signray.tuning.address import prepare_target

        prepare_target(args.address)  # the cluster answers and accepts us, before Ray starts
    # Every data problem surfaces here, before any Ray start. Under Ray the data is only
    # checked here and read on the nodes that train; in this process it is loaded.
    data = check_inputs(cfg) if cfg.ray_workers > 1 else load_inputs(cfg)
    if cfg.resume is not None:  # before anything in output_dir is replaced
        where = f"`--resume` {cfg.resume}"
        problems = resume_problems(load_checkpoint(cfg.resume), cfg, data.train.feature_dim, where)
        if problems:
            raise ConfigError(problems)
    save_config(cfg, files.config)
    precision = cfg.precision
    if cfg.ray_workers == 1:  # what `auto` means here (Ray workers decide on their own devices)
        device = select_device(cfg)
        precision = f"{resolve_precision(cfg.precision, device).name} on {device.type}"
    print(
        f"signray.train: model {cfg.model}, {len(data.train)} train / {len(data.val)} val "
        f"clips, D={data.train.feature_dim}, {cfg.epochs} epochs, precision {precision}, "
        f"output {cfg.output_dir}",
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
    progress = batch_progress(cfg.epochs, enabled=args.progress)
    return train_loop(cfg, reporter, data, progress=progress)


def run(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    cfg = config_from_args(args)
    if cfg.resume is not None:
        cfg = dataclasses.replace(cfg, resume=str(absolute(cfg.resume)))
    result = train(cfg, args)
    files = RunFiles(cfg.output_dir, cfg.spec.class_name)
    print(
        f"done in {time.perf_counter() - start:.1f}s: {result.epochs_run} epochs"
        f"{' (stopped early)' if result.stopped_early else ''}, best val_gloss_acc "
        f"{result.best_val_gloss_acc:.4f} at epoch {result.best_epoch}; best checkpoint "
        f"{files.best}",
        flush=True,
    )
    log = as_location(cfg.log_csv) if cfg.log_csv else files.log
    if log.is_file():
        from signray.analysis.figures import plot_learning_curve  # matplotlib only now

        print(f"learning curve: {plot_learning_curve(log, files.learning_curve)}", flush=True)
    if cfg.smoke_test:
        reloaded = evaluate_checkpoint(files.best, load_inputs(cfg).val, cfg.batch_size)
        print(
            f"smoke test: reloaded {files.best.name}: val_gloss_acc "
            f"{reloaded['val_gloss_acc']:.4f}",
            flush=True,
        )


main = command(build_parser, run, __name__)
