from __future__ import annotations

import pytest
import torch

from signray.models import SignTransformer, TransformerConfig, build_model
from signray.models.transformer import sinusoidal_positions

TINY = TransformerConfig(d_model=16, n_heads=2, depth=2, ff_dim=32, head_hidden=8)


def _model(input_dim: int = 12, config: TransformerConfig = TINY) -> SignTransformer:
    torch.manual_seed(0)
    return SignTransformer(input_dim, num_gloss=5, num_cat=3, config=config)


@pytest.mark.parametrize("input_dim", [12, 156, 1629])
def test_output_shapes(input_dim: int) -> None:
    model = _model(input_dim)
    gloss, cat = model(torch.randn(3, 9, input_dim), torch.tensor([9, 4, 1]))
    assert gloss.shape == (3, 5) and cat.shape == (3, 3)


def test_default_param_count() -> None:
    model = build_model("transformer", None, input_dim=156, num_gloss=105, num_cat=10)
    n_params = sum(p.numel() for p in model.parameters())
    assert 3_000_000 <= n_params <= 3_600_000
    assert n_params == 3_280_371


def test_gradients_reach_all_parameters() -> None:
    model = _model().train()
    gloss, cat = model(torch.randn(2, 6, 12), torch.tensor([6, 3]))
    (gloss.sum() + cat.sum()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("pool", ["mean", "max"])
def test_padding_invariance(pool: str) -> None:
    from dataclasses import replace

    model = _model(config=replace(TINY, pool=pool)).eval()
    short, long = torch.randn(1, 7, 12), torch.randn(1, 20, 12)
    batch = torch.randn(2, 20, 12) * 100  # garbage in the padding must not matter
    batch[0, :7], batch[1] = short[0], long[0]
    with torch.no_grad():
        alone = model(short, torch.tensor([7]))
        padded = model(batch, torch.tensor([7, 20]))
        long_alone = model(long, torch.tensor([20]))
    for a, p in zip(alone, padded, strict=True):
        torch.testing.assert_close(p[0:1], a, atol=1e-5, rtol=0)
    for a, p in zip(long_alone, padded, strict=True):
        torch.testing.assert_close(p[1:2], a, atol=1e-5, rtol=0)


def test_long_clips_work() -> None:
    model = _model().eval()
    with torch.no_grad():
        gloss, cat = model(torch.randn(2, 1500, 12), torch.tensor([1500, 1200]))
    assert gloss.shape == (2, 5) and cat.shape == (2, 3)
    assert torch.isfinite(gloss).all() and torch.isfinite(cat).all()


def test_positions_have_no_maximum_length() -> None:
    short, long = sinusoidal_positions(10, 16), sinusoidal_positions(5000, 16)
    torch.testing.assert_close(long[:10], short)
    torch.testing.assert_close(short[0], torch.tensor([0.0, 1.0] * 8))


@pytest.mark.parametrize("lengths", [[0, 5], [5, 6], [5]])
def test_bad_lengths_raise(lengths: list[int]) -> None:
    with pytest.raises(ValueError, match="lengths"):
        _model()(torch.randn(2, 5, 12), torch.tensor(lengths))


def test_checkpoint_state_dict_round_trips() -> None:
    model = _model().eval()
    sd = model.checkpoint_state_dict()
    assert sd.keys() == model.state_dict().keys()
    torch.manual_seed(1)
    fresh = SignTransformer(12, 5, 3, TINY).eval()
    fresh.load_checkpoint_state_dict(sd)
    x, lengths = torch.randn(2, 6, 12), torch.tensor([6, 2])
    with torch.no_grad():
        torch.testing.assert_close(fresh(x, lengths), model(x, lengths))
    del sd["norm.weight"]
    with pytest.raises(RuntimeError, match="missing keys \\['norm.weight'\\]"):
        fresh.load_checkpoint_state_dict(sd)


def test_stochastic_depth_drops_whole_branches_in_training_only() -> None:
    x, lengths = torch.randn(16, 10, 6), torch.full((16,), 10)
    torch.manual_seed(0)
    off = SignTransformer(6, 5, 3, TransformerConfig(d_model=16, n_heads=2, depth=2, ff_dim=32,
                                                     dropout=0.0))  # fmt: skip
    on = SignTransformer(6, 5, 3, TransformerConfig(d_model=16, n_heads=2, depth=2, ff_dim=32,
                                                    dropout=0.0, drop_path=0.5))  # fmt: skip
    on.load_state_dict(off.state_dict())  # no new parameters
    off.train(), on.train()
    state = torch.get_rng_state()
    a = off(x, lengths)[0]
    assert torch.equal(torch.get_rng_state(), state)  # off: no random draw at all
    assert torch.equal(a, off.eval()(x, lengths)[0])
    assert torch.equal(on.eval()(x, lengths)[0], a)  # evaluation never drops
    on.train()
    b, c = on(x, lengths)[0], on(x, lengths)[0]
    assert not torch.equal(b, c)
    same = (b == a).all(1)  # clips whose every branch happened to be kept
    assert not same.all()
    assert [blk.drop_path for blk in on.blocks] == [0.25, 0.5]
