from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import torch

from signray.errors import ConfigError
from signray.models import IV3GRU, IV3GRUConfig, build_model, make_arch
from signray.models.iv3_gru import build_inception_backbone, inception_weights_path

TINY = IV3GRUConfig(hidden1=6, hidden2=5, dropout=0.3)


def _model(input_dim: int = 12, config: IV3GRUConfig = TINY) -> IV3GRU:
    torch.manual_seed(0)
    return IV3GRU(input_dim, num_gloss=5, num_cat=3, config=config)


@pytest.fixture(scope="module")
def backbone_model() -> IV3GRU:
    """Built once: InceptionV3 takes about a second to construct."""
    return _model(config=IV3GRUConfig(hidden1=4, hidden2=3, use_backbone=True))


@pytest.mark.parametrize("input_dim", [12, 156, 1629])
def test_output_shapes(input_dim: int) -> None:
    model = _model(input_dim)
    gloss, cat = model(torch.randn(3, 9, input_dim), torch.tensor([9, 4, 1]))
    assert gloss.shape == (3, 5) and cat.shape == (3, 3)


@pytest.mark.parametrize(("depth", "bidirectional"), [(1, False), (2, True), (3, False)])
def test_layer_sizes(depth: int, bidirectional: bool) -> None:
    model = _model(
        config=IV3GRUConfig(hidden1=6, hidden2=5, depth=depth, bidirectional=bidirectional)
    )
    sizes = [(g.input_size, g.hidden_size) for g in model.grus]
    mult = 2 if bidirectional else 1
    assert sizes == [(12, 6), (6 * mult, 5), (5 * mult, 5)][:depth]
    assert model.gloss_head.in_features == (6 if depth == 1 else 5) * mult


def test_default_param_count() -> None:
    model = build_model("iv3_gru", None, input_dim=2048, num_gloss=105, num_cat=10)
    assert sum(p.numel() for p in model.parameters()) == 101_743


def test_gradients_reach_all_parameters() -> None:
    model = _model(config=IV3GRUConfig(hidden1=6, hidden2=5, depth=3, bidirectional=True)).train()
    gloss, cat = model(torch.randn(3, 7, 12), torch.tensor([7, 2, 5]))
    (gloss.sum() + cat.sum()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(("depth", "bidirectional"), [(2, False), (3, True)])
def test_padding_invariance(depth: int, bidirectional: bool) -> None:
    config = IV3GRUConfig(hidden1=6, hidden2=5, depth=depth, bidirectional=bidirectional)
    model = _model(config=config).eval()
    short, long = torch.randn(1, 7, 12), torch.randn(1, 20, 12)
    batch = torch.randn(3, 20, 12) * 100  # garbage in the padding must not matter
    batch[0], batch[1, :7] = long[0], short[0]
    with torch.no_grad():
        alone = model(short, torch.tensor([7]))
        padded = model(batch, torch.tensor([20, 7, 3]))
    for a, p in zip(alone, padded, strict=True):
        torch.testing.assert_close(p[1:2], a, atol=1e-5, rtol=0)


def test_config_rules() -> None:
    with pytest.raises(ConfigError) as info:
        make_arch("iv3_gru", {"hidden1": 0, "depth": -1, "dropout": -0.1, "pretrained_backbone": 1})
    assert len(info.value.problems) == 4
    with pytest.raises(ConfigError, match="`pretrained_backbone` needs `use_backbone`"):
        IV3GRUConfig(pretrained_backbone=True)


def test_backbone_on_raw_frames(backbone_model: IV3GRU) -> None:
    model = backbone_model.eval()
    with torch.no_grad():
        gloss, cat = model(torch.rand(1, 2, 3, 80, 80), torch.tensor([2]))
    assert gloss.shape == (1, 5) and cat.shape == (1, 3)
    assert model.grus[0].input_size == 2048


def test_backbone_padding_invariance(backbone_model: IV3GRU) -> None:
    model = backbone_model.eval()
    frames = torch.rand(2, 2, 3, 80, 80)
    with torch.no_grad():
        alone = model(frames[1:, :1], torch.tensor([1]))
        padded = model(frames, torch.tensor([2, 1]))
    for a, p in zip(alone, padded, strict=True):
        torch.testing.assert_close(p[1:], a, atol=1e-5, rtol=0)


def test_frozen_backbone_stays_frozen(backbone_model: IV3GRU) -> None:
    model = backbone_model.train()
    assert model.backbone is not None and not model.backbone.training
    assert model.grus[0].training
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.grus.parameters())


def test_checkpoint_excludes_frozen_backbone_and_round_trips(backbone_model: IV3GRU) -> None:
    sd = backbone_model.checkpoint_state_dict()
    assert sd and not any(k.startswith("backbone.") for k in sd)
    assert sum(v.numel() for v in sd.values()) < 50_000
    fresh = _model(config=backbone_model.config)  # frozen random backbone is rebuilt identically
    with torch.no_grad():
        for p in fresh.grus.parameters():
            p.add_(1.0)
    fresh.load_checkpoint_state_dict(sd)
    for a, b in zip(fresh.state_dict().values(), backbone_model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    del sd["gloss_head.bias"]
    sd["extra"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="missing keys \\['gloss_head.bias'\\], unexpected"):
        fresh.load_checkpoint_state_dict(sd)


def test_unfrozen_backbone_is_trained_and_checkpointed() -> None:
    model = _model(
        config=IV3GRUConfig(hidden1=4, hidden2=3, use_backbone=True, freeze_backbone=False)
    )
    assert model.backbone is not None and model.train().backbone.training
    assert all(p.requires_grad for p in model.backbone.parameters())
    assert any(k.startswith("backbone.") for k in model.checkpoint_state_dict())


def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_missing_pretrained_weights_fail_fast(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _no_network(monkeypatch)
    expected = tmp_path / "hub" / "checkpoints" / "inception_v3_google-0cc3c7bd.pth"
    assert inception_weights_path() == expected
    start = time.perf_counter()
    with pytest.raises(ConfigError) as info:
        build_model(
            "iv3_gru",
            {"use_backbone": True, "pretrained_backbone": True},
            input_dim=2048,
            num_gloss=5,
            num_cat=3,
        )
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert str(expected) in message
    assert "never downloads" in message and "--no-pretrained-backbone" in message
    assert "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth" in message


def test_cached_pretrained_weights_are_loaded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from torchvision.models import inception_v3

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    _no_network(monkeypatch)
    torch.manual_seed(3)
    # Same keys as the published file: it includes the auxiliary classifier and fc.
    published = inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict()
    inception_weights_path().parent.mkdir(parents=True)
    torch.save(published, inception_weights_path())
    backbone = build_inception_backbone(pretrained=True)
    assert backbone.transform_input
    loaded = backbone.state_dict()
    assert not any(k.startswith(("AuxLogits.", "fc.")) for k in loaded)
    for key, value in loaded.items():
        torch.testing.assert_close(value, published[key], atol=0, rtol=0)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_grus_run_in_fp32_with_autocast_off_under_mixed_precision(bidirectional, dtype) -> None:
    """On CUDA, autocast would run cuDNN GRUs in float16 whatever its dtype (AutocastRNN.cpp),
    without a GradScaler under bf16: the GRUs must see fp32 inputs with autocast off. The heads
    keep the mixed precision."""
    torch.manual_seed(0)
    model = IV3GRU(8, 5, 3, IV3GRUConfig(hidden1=6, hidden2=4, bidirectional=bidirectional))
    seen = []
    for gru in model.grus:
        gru.register_forward_pre_hook(
            lambda m, args: seen.append((torch.is_autocast_enabled("cpu"), _data(args[0]).dtype))
        )
    x, lengths = torch.randn(4, 7, 8), torch.tensor([7, 3, 5, 1])
    with torch.autocast("cpu", dtype=dtype):
        gloss, _ = model(x, lengths)
    assert seen == [(False, torch.float32)] * len(model.grus)
    assert gloss.dtype == dtype  # the heads still ran under autocast


def _data(x):
    return x.data if isinstance(x, torch.nn.utils.rnn.PackedSequence) else x


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("bidirectional", [False, True])
def test_cudnn_grus_compute_in_fp32_under_bf16_autocast(bidirectional) -> None:
    model = IV3GRU(8, 5, 3, IV3GRUConfig(bidirectional=bidirectional)).cuda()
    out = []
    for gru in model.grus:
        gru.register_forward_hook(lambda m, args, result: out.append(_data(result[0]).dtype))
    x, lengths = torch.randn(4, 7, 8, device="cuda"), torch.tensor([7, 3, 5, 1])
    with torch.autocast("cuda", dtype=torch.bfloat16):
        gloss, _ = model(x, lengths.cuda(), lengths)
    assert out == [torch.float32] * len(model.grus) and gloss.dtype == torch.bfloat16
