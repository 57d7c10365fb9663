"""Benchmark 9: video extraction — signray's Ray Data pipeline against the reference's loop.

Contestants, on the same real videos (the photographed person of tests/video/videohelpers.py,
30 fps), repetitions interleaved, one local Ray cluster started once:

- ``reference``: one process doing what the reference's preprocess.py does, video after video:
  MediaPipe (segmentation + Holistic) created per video, then per frame keypoints and, with
  features, one InceptionV3 call per frame.
- ``ray_kp_1`` / ``ray_kp_2``: `signray.tuning.extraction.run_pipeline`, keypoints only, with 1
  and 2 keypoint actors (one CPU each): the scaling of keypoints with cores.
- ``ray_features``: the pipeline with features on this machine's device (a GPU actor when Ray
  sees one, else one CPU actor beside one keypoint actor), against ``reference_features``.

Reported: clips/s and frames/s of each, frames/s per keypoint worker, and the ratios. Target:
2 keypoint workers >= 1.7x one (needs a quiet machine with at least 2 free cores).

    python -m benchmarks.extract [--clips 16] [--frames 60] [--reps 2] [--tiny]
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks._common import CACHE_DIR, base_parser, interleaved, median, target, write_result


def _videos(clips: int, frames: int) -> list[Path]:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "video"))
    from videohelpers import write_video

    folder = CACHE_DIR / f"extract_{clips}x{frames}"
    paths = [folder / f"clip{i:03d}.mp4" for i in range(clips)]
    for path in paths:
        if not path.is_file():
            write_video(path, frames=frames)
    return paths


def _reference(paths: list[Path], cfg, weights) -> int:
    """The reference's loop: per video, fresh MediaPipe models over all its frames in order;
    per frame, one InceptionV3 call."""
    from signray.video.decode import read_chunks
    from signray.video.features import FeatureExtractor
    from signray.video.keypoints import HolisticTracker

    extractor = FeatureExtractor(weights, precision="fp32", batch=1) if cfg.features else None
    frames = 0
    for path in paths:
        tracker = HolisticTracker(cfg.conf_thresh, cfg.segment_person)
        _, chunks = read_chunks(path, target_fps=cfg.target_fps, out_size=cfg.out_size,
                                chunk_frames=10**9, features=cfg.features)  # fmt: skip
        for chunk in chunks:
            tracker.run(chunk.frames)
            if extractor is not None:
                extractor(chunk.feature_frames)  # batch=1: one call per frame
            frames += len(chunk.frames)
        tracker.close()
    return frames


def _pipeline(paths: list[Path], cfg, weights, keypoint_workers: int) -> int:
    from signray.tuning.extraction import cluster_resources, plan_pools, run_pipeline
    from signray.video.sources import Job

    cpus, gpus = cluster_resources()
    pools = plan_pools(cfg, cpus, gpus)
    pools = type(pools)(pools.decode, keypoint_workers, pools.features,
                        pools.gpus_per_feature_worker, pools.feature_cpus)  # fmt: skip
    jobs = [Job(p.stem, str(p), p.name, 0, 0) for p in paths]
    frames = [0]

    def count(row) -> None:
        assert not row["error"], row["error"]
        frames[0] += len(row["X"])

    run_pipeline(jobs, cfg, pools, weights, count)
    return frames[0]


def main(argv=None) -> dict:
    p = base_parser("extract", __doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--frames", type=int, default=60, help="frames per clip (30 fps)")
    args = p.parse_args(argv)
    if args.tiny:
        args.clips, args.frames = 2, 8
    reps = args.reps or (1 if args.tiny else 2)

    from signray.config.extract import ExtractConfig
    from signray.tuning.cluster import init_ray  # before ray: it keeps the cluster on loopback

    paths = _videos(args.clips, args.frames)
    kp = ExtractConfig()
    feats = ExtractConfig(features=True, random_backbone=True)
    init_ray(num_cpus=2 if args.tiny else None, dashboard=False, quiet=True)

    def timed(fn):
        def run():
            start = time.perf_counter()
            frames = fn()
            return {"seconds": time.perf_counter() - start, "frames": frames}

        return run

    contestants = {
        "reference": timed(lambda: _reference(paths, kp, None)),
        "ray_kp_1": timed(lambda: _pipeline(paths, kp, None, 1)),
        "ray_kp_2": timed(lambda: _pipeline(paths, kp, None, 2)),
        "reference_features": timed(lambda: _reference(paths, feats, None)),
        "ray_features": timed(lambda: _pipeline(paths, feats, None, 1)),
    }
    raw = interleaved(contestants, reps)
    import ray

    ray.shutdown()
    results = {}
    for name, runs in raw.items():
        seconds = median(r["seconds"] for r in runs)
        frames = runs[0]["frames"]
        results[name] = {"seconds": round(seconds, 3), "frames": frames,
                         "clips_per_s": round(len(paths) / seconds, 3),
                         "frames_per_s": round(frames / seconds, 2)}  # fmt: skip
    fps = {name: r["frames_per_s"] for name, r in results.items()}
    results["ray_kp_1"]["frames_per_s_per_worker"] = fps["ray_kp_1"]
    results["ray_kp_2"]["frames_per_s_per_worker"] = round(fps["ray_kp_2"] / 2, 2)
    ratios = {
        "kp_2_workers_over_1": round(fps["ray_kp_2"] / fps["ray_kp_1"], 3),
        "kp_2_workers_over_reference": round(fps["ray_kp_2"] / fps["reference"], 3),
        "features_pipeline_over_reference": round(
            fps["ray_features"] / fps["reference_features"], 3
        ),
    }
    return write_result("extract", args, {
        "clips": args.clips, "frames_per_clip": args.frames, "reps": reps,
        "results": {**results, "ratios": ratios},
        "targets": [target("keypoints: 2 workers / 1 worker", ratios["kp_2_workers_over_1"], 1.7)],
    })  # fmt: skip


if __name__ == "__main__":
    main()
