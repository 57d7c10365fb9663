from __future__ import annotations

import dataclasses

import pytest
import torch

from signray.config import AUGMENTATIONS, resolve_config
from signray.data.layouts import FSL78
from signray.data.loader import Batch, collate_padded
from signray.errors import ConfigError
from signray.training.augment import Augmenter, build_augmenter
from signray.training.loop import train_loop
from signray.training.reporters import FileReporter
from signray.training.steps import LossWeights, multitask_loss

SMALL_TX = {"d_model": 32, "n_heads": 4, "depth": 1, "ff_dim": 64, "head_hidden": 32}
# A strength for each augmentation, strong enough to change every clip.
STRENGTHS = {
    "aug_speed": 0.3,
    "aug_time_warp": 0.8,
    "aug_crop": 0.5,
    "aug_frame_drop": 0.3,
    "aug_noise": 0.01,
    "aug_feature_drop": 0.3,
    "aug_mixup": 0.4,
    "aug_cutmix": 0.4,
    "aug_flip": 1.0,
    "aug_rotate": 20.0,
    "aug_scale": 0.2,
    "aug_shift": 0.1,
    "aug_part_drop": 0.5,
}
TIME = ("aug_speed", "aug_time_warp", "aug_crop", "aug_frame_drop")
MIX = ("aug_mixup", "aug_cutmix")


def _cfg(**over):
    return resolve_config({"num_gloss": 8, "num_cat": 2, "keypoint_layout": "fsl78", **over})


def _batch(tiny_keypoints, n=8) -> Batch:
    """A padded batch of real synthetic keypoint clips, one hand missing in some frames; one
    gloss per clip, so that a mixed label names its partner."""
    train, _ = tiny_keypoints
    batch = collate_padded([(train.clip(i), int(train.gloss[i]), int(train.cat[i]))
                            for i in range(n)])  # fmt: skip
    x = batch.x.view(len(batch), batch.x.shape[1], 78, 2)
    x[0, :3, 25:46] = 0.0  # the left hand was not detected in clip 0's first frames
    assert int(batch.lengths.min()) < batch.x.shape[1]  # some clips are padded
    return dataclasses.replace(batch, gloss=torch.arange(n), cat=torch.arange(n) % 2)


def _padding_is_zero(out: Batch) -> bool:
    valid = torch.arange(out.x.shape[1])[None, :] < out.lengths[:, None]
    return bool((out.x[~valid] == 0).all())


def test_the_fields_are_typed_config_fields_and_every_one_is_covered():
    assert set(STRENGTHS) == set(AUGMENTATIONS)
    cfg = _cfg(aug_rotate="15")  # flags arrive as strings
    assert cfg.aug_rotate == 15.0


@pytest.mark.parametrize("name", sorted(STRENGTHS))
def test_each_augmentation_keeps_shapes_labels_and_padding(name, tiny_keypoints):
    torch.manual_seed(0)
    batch = _batch(tiny_keypoints)
    out = Augmenter(_cfg(**{name: STRENGTHS[name]}))(batch, batch.lengths)
    B, T, D = batch.x.shape
    assert out.x.shape[0] == B and out.x.shape[2] == D and out.x.dtype == torch.float32
    assert out.lengths.dtype == torch.int64 and (out.lengths >= 1).all()
    assert out.x.shape[1] == int(out.lengths.max())  # no all-padding frames
    assert _padding_is_zero(out)
    if name in TIME:
        assert not torch.equal(out.lengths, batch.lengths) or name == "aug_time_warp"
        assert out.x.shape[1] <= T  # never longer than the batch was
    else:
        assert torch.equal(out.lengths, batch.lengths)
    if name in MIX:
        for soft, classes in ((out.gloss, 8), (out.cat, 2)):
            assert soft.shape == (B, classes)
            torch.testing.assert_close(soft.sum(1), torch.ones(B))
        own = out.gloss[torch.arange(B), batch.gloss]
        if name == "aug_cutmix":  # the label share is the share of frames kept
            valid = torch.arange(T)[None, :] < batch.lengths[:, None]
            unchanged = ((out.x == batch.x).all(-1) & valid).sum(1)
            torch.testing.assert_close(own * batch.lengths, unchanged.float())
        else:
            assert (own > 0).all()
    else:
        assert torch.equal(out.gloss, batch.gloss) and torch.equal(out.cat, batch.cat)
    assert not torch.equal(out.x[:, : min(T, out.x.shape[1])], batch.x[:, : out.x.shape[1]])


@pytest.mark.parametrize("name", ["aug_rotate", "aug_scale", "aug_shift", "aug_noise", "aug_speed"])
def test_missing_points_stay_missing(name, tiny_keypoints):
    batch = _batch(tiny_keypoints)
    out = Augmenter(_cfg(**{name: STRENGTHS[name]}))(batch, batch.lengths)
    points = out.x.view(len(out), out.x.shape[1], 78, 2)
    missing_before = (batch.x.view(len(batch), -1, 78, 2) == 0).all(-1)
    if name != "aug_speed":  # same frames: the same points are missing
        assert ((points == 0).all(-1) == missing_before).all()
    else:  # resampled frames: never a point half-way between a detection and (0, 0)
        assert ((points[0, :3, 25:46] == 0).all(-1)).any()
        near_zero = (points.abs() < 1e-3) & (points != 0)
        assert not near_zero.any()


def test_flip_swaps_hands_by_index_and_twice_is_the_identity(tiny_keypoints):
    batch = _batch(tiny_keypoints)
    flip = Augmenter(_cfg(aug_flip=1.0))
    once = flip(batch, batch.lengths)
    before = batch.x.view(len(batch), -1, 78, 2)
    after = once.x.view(len(once), -1, 78, 2)
    left, right = range(25, 46), range(46, 67)
    # y is untouched by a horizontal mirror: the right hand's y is the left hand's, index by index
    assert torch.equal(after[..., list(right), 1], before[..., list(left), 1])
    assert torch.equal(after[..., list(left), 1], before[..., list(right), 1])
    assert torch.equal(after[..., 11, 1], before[..., 12, 1])  # shoulders swap
    assert torch.equal(after[..., 0, 1], before[..., 0, 1])  # the nose stays
    # x is mirrored about the body centre: left + mirrored right is constant per clip
    twice = flip(once, once.lengths)
    torch.testing.assert_close(twice.x, batch.x, rtol=0, atol=1e-6)
    assert FSL78.mirror[25] == 46 and FSL78.mirror[FSL78.mirror[30]] == 30


def test_zero_strength_is_the_identity_bit_for_bit(tiny_keypoints):
    batch = _batch(tiny_keypoints)
    assert build_augmenter(_cfg(), 156) is None  # the loop then never touches a batch
    for layout in ("fsl78", None):
        out = Augmenter(_cfg(keypoint_layout=layout))(batch, batch.lengths)
        assert torch.equal(out.x, batch.x) and torch.equal(out.lengths, batch.lengths)
        assert out.gloss is batch.gloss and out.cat is batch.cat


def test_an_off_run_is_bit_identical_to_one_without_the_fields(tmp_path, tiny_keypoints):
    base = dict(num_gloss=6, num_cat=2, batch_size=8, epochs=2, output_dir=str(tmp_path / "a"),
                **SMALL_TX)  # fmt: skip
    a = train_loop(resolve_config(base), _reporter(tmp_path / "a"), tiny_keypoints)
    off = {**base, "output_dir": str(tmp_path / "b"), "keypoint_layout": "fsl78",
           **{name: 0.0 for name in STRENGTHS}}  # fmt: skip
    b = train_loop(resolve_config(off), _reporter(tmp_path / "b"), tiny_keypoints)
    assert [m["val_loss"] for m in a.history] == [m["val_loss"] for m in b.history]


def _reporter(out, resume=None, epochs=3):
    return FileReporter(out, "SignTransformer", total_epochs=epochs, resume=resume)


def test_a_seeded_augmented_run_is_reproducible_and_resumes_identically(tmp_path, tiny_keypoints):
    values = dict(num_gloss=6, num_cat=2, batch_size=8, epochs=3, keypoint_layout="fsl78",
                  **STRENGTHS, **SMALL_TX)  # fmt: skip

    def run(name, epochs, resume=None):
        cfg = resolve_config({**values, "epochs": epochs, "output_dir": str(tmp_path / name)})
        return train_loop(cfg, _reporter(tmp_path / name, resume, epochs), tiny_keypoints)

    first, second = run("a", 3), run("b", 3)
    assert [m["train_loss"] for m in first.history] == [m["train_loss"] for m in second.history]
    run("c", 2)
    resumed = run("c", 3, resume=tmp_path / "c" / "SignTransformer_last.pt")
    assert resumed.history[-1]["train_loss"] == first.history[-1]["train_loss"]
    assert resumed.history[-1]["val_loss"] == first.history[-1]["val_loss"]
    other = dataclasses.replace(resolve_config({**values, "output_dir": str(tmp_path / "d")}),
                                seed=7)  # fmt: skip
    changed = train_loop(other, _reporter(tmp_path / "d"), tiny_keypoints)
    assert changed.history[0]["train_loss"] != first.history[0]["train_loss"]


@pytest.mark.parametrize("name", MIX)
def test_mixed_labels_reach_both_heads(name, tiny_keypoints):
    torch.manual_seed(1)
    batch = _batch(tiny_keypoints)
    n = len(batch)
    # one gloss per clip, so each mixed row names its partner
    batch = dataclasses.replace(batch, gloss=torch.arange(n), cat=torch.arange(n) % 3)
    cfg = resolve_config({"num_gloss": n, "num_cat": 3, name: 0.4})
    out = Augmenter(cfg)(batch, batch.lengths)
    mixed = 0
    for i in range(n):
        own = out.gloss[i, i]
        others = [j for j in torch.nonzero(out.gloss[i]).flatten().tolist() if j != i]
        partner = others[0] if others else i
        mixed += bool(others)
        expected_cat = torch.zeros(3)
        expected_cat[int(batch.cat[i])] += own
        expected_cat[int(batch.cat[partner])] += 1 - own
        torch.testing.assert_close(out.cat[i], expected_cat)  # the same mixture, both heads
    assert mixed >= n // 2
    # the loss of a mixture is the same mixture of the two labels' losses, in both heads
    gl, cl = torch.randn(n, n), torch.randn(n, 3)
    w = LossWeights(0.3, 0.7)
    soft = multitask_loss(gl, cl, out.gloss, out.cat, w, "none")
    by_class = w.gloss * (out.gloss * -gl.log_softmax(1)).sum(1) + w.cat * (
        out.cat * -cl.log_softmax(1)
    ).sum(1)
    torch.testing.assert_close(soft, by_class)
    hard = multitask_loss(gl, cl, batch.gloss, batch.cat, w, "none")
    assert not torch.allclose(soft, hard)


def test_keypoint_augmentations_need_the_layout_and_its_width(tiny_features):
    with pytest.raises(ConfigError) as err:
        resolve_config({"aug_flip": 0.5, "aug_rotate": 10})
    assert "`aug_flip`, `aug_rotate` need(s) `keypoint_layout`" in str(err.value)
    with pytest.raises(ConfigError, match="`keypoint_layout` must be one of fsl78"):
        resolve_config({"keypoint_layout": "coco17"})
    with pytest.raises(ConfigError, match="model 'iv3_gru' reads features"):
        resolve_config({"model": "iv3_gru", "keypoint_layout": "fsl78"})
    with pytest.raises(ConfigError, match=r"`aug_speed` must be in \[0, 0.5\], but got"):
        resolve_config({"aug_speed": 0.7})
    with pytest.raises(ConfigError, match="but the data has D=2048"):
        build_augmenter(_cfg(aug_flip=0.5), 2048)
    with pytest.raises(ConfigError, match="`ema_decay` and `swa_epochs` both"):
        resolve_config({"ema_decay": 0.9, "swa_epochs": 2})


def test_the_fsl78_layout_mirrors_mediapipe_pairs():
    from signray.data.layouts import KeypointLayout

    m = FSL78.mirror
    assert m[0] == 0 and (m[11], m[12]) == (12, 11) and (m[23], m[24]) == (24, 23)  # pose
    assert all(m[25 + i] == 46 + i for i in range(21))  # the hands swap point by point
    assert (m[67], m[68], m[76], m[77]) == (67, 69, 76, 77)  # nose tip stays, eyes swap
    with pytest.raises(ValueError, match="involution"):
        KeypointLayout("bad", 3, (1, 2, 0), {}, (0, 1))


def test_lengths_stay_known_on_the_host(tiny_keypoints):
    """A batch that carries its lengths on the host gets the augmented ones there too, and the
    augmenter reads them from there (no copy back from the device)."""

    @dataclasses.dataclass
    class HostBatch(Batch):
        host_lengths: torch.Tensor | None = None

    batch = _batch(tiny_keypoints)
    carried = HostBatch(batch.x, batch.lengths, batch.gloss, batch.cat, batch.lengths.clone())
    out = Augmenter(_cfg(aug_crop=0.5, aug_frame_drop=0.3))(carried)
    assert out.host_lengths.device.type == "cpu"
    assert torch.equal(out.host_lengths, out.lengths) and not torch.equal(
        out.lengths, batch.lengths
    )
