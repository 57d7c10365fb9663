"""InceptionV3 features of a real video equal a direct torchvision call on the same frames, read
from a weights file shaped like torchvision's ImageNet one (random values: the real file cannot
be downloaded here)."""

from __future__ import annotations

from itertools import islice

import av
import cv2
import numpy as np
import pytest
import torch
from torchvision.models import inception_v3

from signray.errors import ConfigError
from signray.video.decode import read_chunks
from signray.video.features import FeatureExtractor, backbone_identity, load_backbone


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A state dict with every key of torchvision's IMAGENET1K_V1 file, AuxLogits included."""
    with torch.random.fork_rng():
        torch.manual_seed(7)
        net = inception_v3(weights=None, aux_logits=True, init_weights=True)
    path = tmp_path_factory.mktemp("weights") / "inception_v3_google-test.pth"
    torch.save(net.state_dict(), path)
    return path


def test_features_match_torchvision_on_the_same_frames(person_video, weights_file):
    weights = weights_file.read_bytes()
    extractor = FeatureExtractor(weights, precision="fp32", batch=4)
    _, chunks = read_chunks(person_video, target_fps=30, out_size=64, chunk_frames=6,
                            features=True)  # fmt: skip
    first = next(chunks)
    features = extractor(first.feature_frames)
    assert features.shape == (6, 2048) and features.dtype == np.float32

    # The reference's recipe, written out: decode, resize to 299 x 299, /255, ImageNet
    # mean/std, torchvision's InceptionV3 with its ImageNet input transform, fc removed.
    with av.open(str(person_video)) as container:
        rgb = [f.to_ndarray(format="rgb24") for f in islice(container.decode(video=0), 6)]
    x = torch.from_numpy(np.stack([cv2.resize(f, (299, 299)) for f in rgb])).float() / 255
    x = (x.permute(0, 3, 1, 2) - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / (
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    )
    net = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)
    net.load_state_dict(torch.load(weights_file, weights_only=True))
    net.aux_logits, net.AuxLogits, net.fc = False, None, torch.nn.Identity()
    with torch.inference_mode():
        expected = net.eval()(x).numpy()
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4)


def test_backbone_identity_names_the_weights():
    assert backbone_identity(None) == "random-seed-0"
    assert backbone_identity(b"abc").startswith("sha256:ba7816bf")


def test_a_file_that_is_not_inception_weights_is_refused(tmp_path):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="cannot load pretrained InceptionV3 weights"):
        load_backbone((tmp_path / "other.pth").read_bytes())
