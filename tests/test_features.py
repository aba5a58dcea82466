"""timm's feature API on every PyTorch class: forward_intermediates, feature_info, the features-only
backbone, forward_head, reset_classifier and set_grad_checkpointing, against timm 1.0.31's outputs."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from efficientformer import (  # noqa: E402
    ConfigError,
    EfficientFormerConfig,
    EfficientFormerForImageClassification,
    EfficientFormerForImageClassificationWithTeacher,
    EfficientFormerModel,
    InputError,
)

CLASSES = [EfficientFormerModel, EfficientFormerForImageClassification,
           EfficientFormerForImageClassificationWithTeacher]


from conftest import randomize, tiny_config  # noqa: E402 - the shared tiny config and randomizer


def randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    return randomize(model, seed).eval()


@pytest.fixture(scope="module")
def timm_small(fixtures_dir):
    expected = np.load(fixtures_dir / "timm-small" / "expected.npz")
    return fixtures_dir / "timm-small" / "hub", expected, torch.from_numpy(expected["pixel_values"])


# ------------------------------------------------------------------------------ parity with timm
def test_stage_maps_match_timm(timm_small):
    hub, expected, pixels = timm_small
    backbone = EfficientFormerModel.from_pretrained(hub)
    features_only = EfficientFormerModel.from_pretrained(hub, out_indices=(0, 1, 2, 3))
    with torch.no_grad():
        final, maps = backbone.forward_intermediates(pixels)
        for got in (maps, features_only(pixels)):
            assert len(got) == 4
            for i, feature in enumerate(got):
                np.testing.assert_allclose(feature.numpy(), expected[f"features.{i}"], atol=1e-5, rtol=0)
        # timm's `final` is the normalized tokens, and norm=True puts them on the grid as the last map
        np.testing.assert_allclose(final.numpy(), expected["last_hidden_state"], atol=1e-5, rtol=0)
        normed = backbone.forward_intermediates(pixels, indices=1, norm=True, intermediates_only=True)[0]
    np.testing.assert_allclose(normed.flatten(2).transpose(1, 2).numpy(), expected["last_hidden_state"], atol=1e-5)


def test_classifier_intermediates_then_head_give_timms_logits(timm_small):
    hub, expected, pixels = timm_small
    model = EfficientFormerForImageClassificationWithTeacher.from_pretrained(hub)
    with torch.no_grad():
        final, maps = model.forward_intermediates(pixels, indices=[1, -1])
        logits = model.forward_head(final)
    np.testing.assert_allclose(logits.numpy(), expected["logits"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(maps[0].numpy(), expected["features.1"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(maps[1].numpy(), expected["features.3"], atol=1e-5, rtol=0)


# ------------------------------------------------------------------------- forward_intermediates
def test_forward_intermediates_takes_timms_arguments():
    model = randomized(EfficientFormerModel(tiny_config()))
    pixels = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        final, every = model.forward_intermediates(pixels)
        assert [tuple(m.shape) for m in every] == [(2, 8, 24, 16), (2, 16, 12, 8), (2, 24, 6, 4), (2, 32, 3, 2)]
        torch.testing.assert_close(final, model.forward_features(pixels), rtol=0, atol=0)
        cases = [(2, [2, 3]), ((0, -1), [0, 3]), ([2, 1, 2], [1, 2]), (range(1), [0])]
        for indices, stages in cases:
            maps = model.forward_intermediates(pixels, indices=indices, intermediates_only=True)
            assert len(maps) == len(stages)
            for got, stage in zip(maps, stages):
                assert torch.equal(got, every[stage])
        # stop_early: the final features are the last requested stage's map, and later stages never run
        ran = []
        handle = model.encoder.last_stage.register_forward_hook(lambda *args: ran.append(True))
        final, maps = model.forward_intermediates(pixels, indices=(1,), stop_early=True)
        model.forward_intermediates(pixels, indices=(0, 2), intermediates_only=True)
        handle.remove()
        assert not ran and torch.equal(final, every[1]) and torch.equal(maps[0], every[1])
        # the earlier keyword keeps its meaning: the list of maps only
        legacy = model.forward_intermediates(pixels, out_indices=(1, -1))
    assert isinstance(legacy, list) and [m.shape[1] for m in legacy] == [16, 32]


@pytest.mark.parametrize("kwargs, message", [
    (dict(indices=5), "last 5 stages but the model has 4"),
    (dict(indices=0), "last 0 stages"),
    (dict(indices=(4,)), r"indices \(4,\) must lie in 0..3"),
    (dict(out_indices=(-5,)), r"out_indices \(-5,\) must lie"),
    (dict(indices=()), "at least one"),
    (dict(indices="all"), "int .*or a sequence"),
    (dict(indices=1, out_indices=(1,)), "not both"),
    (dict(output_fmt="NHWC"), "NCHW only"),
])
def test_bad_intermediate_arguments_are_one_sentence(kwargs, message):
    model = EfficientFormerModel(tiny_config())
    ran = []
    model.patch_embed.register_forward_pre_hook(lambda *args: ran.append(True))
    with pytest.raises(InputError, match=message):
        model.forward_intermediates(torch.randn(1, 3, 64, 64), **kwargs)
    assert not ran


# --------------------------------------------------------------------------- features-only backbone
def test_features_only_backbone_runs_only_what_it_returns():
    full = randomized(EfficientFormerModel(tiny_config()))
    backbone = EfficientFormerModel(tiny_config(), out_indices=(0, 1))
    backbone.load_state_dict(full.state_dict())  # the same modules: folders save and load as any backbone
    backbone.eval()
    pixels = torch.randn(2, 3, 64, 64)
    ran = []
    backbone.encoder.intermediate_stages[3].register_forward_pre_hook(lambda *args: ran.append(True))
    with torch.no_grad():
        maps = backbone(pixels)
        expected = full.forward_intermediates(pixels, indices=(0, 1), intermediates_only=True)
    assert isinstance(maps, list) and all(torch.equal(a, b) for a, b in zip(maps, expected))
    assert not ran  # the Downsample after stage 1 and everything later never ran
    assert backbone.feature_info.channels() == [8, 16] and backbone.feature_info.reduction() == [4, 8]
    assert len(backbone.feature_info) == 4  # timm's FeatureInfo also lists every stage
    with pytest.raises(InputError, match="returns its stage maps only"):
        backbone(pixels, output_hidden_states=True)


def test_pruned_backbone_gives_every_parameter_a_gradient():
    backbone = randomized(EfficientFormerModel(tiny_config(), out_indices=(0, 1)))
    reference = copy.deepcopy(backbone)
    assert backbone.prune_intermediate_layers() == [0, 1]
    assert backbone.encoder.last_stage is None and backbone.layernorm is None
    assert len(backbone.encoder.intermediate_stages) == 3  # stage 0, Downsample, stage 1: not the next Downsample
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(backbone(pixels), reference(pixels)))
    backbone.train()
    sum(m.mean() for m in backbone(pixels)).backward()  # DDP without find_unused_parameters needs this
    assert all(p.grad is not None for p in backbone.parameters())
    for call, message in ((lambda: backbone.forward_intermediates(pixels, indices=(3,)), "pruned after stage 1"),
                          (lambda: backbone.forward_intermediates(pixels, indices=(1,), norm=True), "final norm"),
                          (lambda: backbone.forward_features(pixels), "pruned after stage 1"),
                          (lambda: backbone.prune_intermediate_layers(3), "pruned already")):
        with pytest.raises(InputError, match=message):
            call()


def test_from_pretrained_out_indices_builds_the_backbone_or_is_refused(tmp_path):
    source = randomized(EfficientFormerForImageClassificationWithTeacher(tiny_config()))
    source.save_pretrained(tmp_path)
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = source.forward_intermediates(pixels, intermediates_only=True)
        backbone = EfficientFormerModel.from_pretrained(tmp_path, out_indices=(1, 2))
        every = EfficientFormerModel.from_pretrained(tmp_path, features_only=True)
        assert [torch.equal(a, b) for a, b in zip(backbone(pixels), expected[1:3])] == [True, True]
        assert len(every(pixels)) == 4 and torch.equal(every(pixels)[3], expected[3])
    assert backbone.out_indices == (1, 2) and "out_indices" not in backbone.config.to_dict()
    backbone.save_pretrained(tmp_path / "backbone")  # a features-only backbone saves as the backbone it is
    again = EfficientFormerModel.from_pretrained(tmp_path / "backbone", out_indices=(1, 2))
    with torch.no_grad():
        assert [torch.equal(a, b) for a, b in zip(again(pixels), expected[1:3])] == [True, True]
    for cls in (EfficientFormerForImageClassification, EfficientFormerForImageClassificationWithTeacher):
        with pytest.raises(ConfigError, match="EfficientFormerModel.from_pretrained"):
            cls.from_pretrained(tmp_path, out_indices=(1, 2))


@pytest.mark.parametrize("cls", CLASSES)
def test_feature_info_names_our_modules(cls):
    # no Downsample between stages 1 and 2 (same width, downsamples[1] off): the reductions show it
    model = randomized(cls(tiny_config(downsamples=[True, False, True, True], hidden_sizes=[8, 16, 16, 32])))
    info = model.feature_info
    assert info.channels() == [8, 16, 16, 32] and info.reduction() == [4, 8, 8, 16]
    prefix = "" if cls is EfficientFormerModel else "efficientformer."
    assert info.module_name() == [f"{prefix}encoder.intermediate_stages.{i}" for i in (0, 2, 3)] + \
        [f"{prefix}encoder.last_stage"]
    modules = dict(model.named_modules())
    captured = {}
    for entry in info[:-1]:
        name = entry["module"]
        modules[name].register_forward_hook(lambda m, i, out, name=name: captured.update({name: out}))
    with torch.no_grad():
        _, maps = model.forward_intermediates(torch.randn(1, 3, 64, 64))
    for entry, feature in zip(info, maps):
        assert feature.shape[1] == entry["num_chs"] and feature.shape[-1] == 64 // entry["reduction"]
        if entry["index"] < 3:
            assert torch.equal(captured[entry["module"]], feature)
    assert isinstance(modules[info[3]["module"]], torch.nn.Module)
    assert EfficientFormerModel(EfficientFormerConfig.from_preset("l1")).feature_info.reduction() == [4, 8, 16, 32]


# ------------------------------------------------------------------------------------ heads
def test_forward_head_matches_forward_on_every_class():
    pixels = torch.randn(2, 3, 64, 64)
    for cls in CLASSES:
        model = randomized(cls(tiny_config()))
        with torch.no_grad():
            tokens = model.forward_features(pixels)
            pooled = model.forward_head(tokens, pre_logits=True)
            torch.testing.assert_close(pooled, tokens.mean(dim=1), rtol=0, atol=0)
            if cls is EfficientFormerModel:
                torch.testing.assert_close(model.forward_head(tokens), pooled, rtol=0, atol=0)
                continue
            out = model(pixels)
            # WithTeacher: the mean of both heads, as forward's logits (it used to return the class head only)
            torch.testing.assert_close(model.forward_head(tokens), out.logits, rtol=1e-6, atol=1e-6)
    with pytest.raises(InputError, match=r"forward_head takes the \(batch, tokens, 32\)"):
        model.forward_head(torch.randn(2, 32, 2, 2))


def test_reset_classifier_rebuilds_the_heads_and_the_labels():
    model = randomized(EfficientFormerForImageClassificationWithTeacher(tiny_config()))
    backbone = copy.deepcopy(model.efficientformer.state_dict())
    pixels = torch.randn(2, 3, 64, 64)
    model.reset_classifier(5)
    heads = model.get_classifier()
    assert [h.out_features for h in heads] == [5, 5] and not any(h.training for h in heads)
    assert model.config.num_labels == 5 and model.config.id2label[4] == "LABEL_4"
    assert all(torch.equal(v, backbone[k]) for k, v in model.efficientformer.state_dict().items())
    with torch.no_grad():
        assert model(pixels).logits.shape == (2, 5)
        loss = model(pixels, labels=torch.tensor([4, 0])).loss
    assert torch.isfinite(loss)
    model.reset_classifier(0)
    assert all(isinstance(h, torch.nn.Identity) for h in model.get_classifier())
    with torch.no_grad():
        torch.testing.assert_close(model(pixels).logits, model.forward_head(model.forward_features(pixels), True))
    with pytest.raises(InputError, match="no classification head"):
        model(pixels, labels=torch.tensor([0, 1]))
    kept = EfficientFormerForImageClassification(tiny_config(id2label={0: "cat", 1: "dog", 2: "fox"}))
    kept.reset_classifier(3)
    assert kept.config.id2label == {0: "cat", 1: "dog", 2: "fox"}


def test_grad_checkpointing_gives_the_same_gradients_and_statistics():
    config = tiny_config(drop_path_rate=0.2, hidden_dropout_prob=0.1)
    plain = randomized(EfficientFormerForImageClassificationWithTeacher(config)).train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.set_grad_checkpointing(True)
    pixels, labels = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 1])
    calls = []
    checkpointed.efficientformer.encoder.last_stage.meta4D_layers.blocks[0].register_forward_pre_hook(
        lambda *args: calls.append(True))
    for model in (plain, checkpointed):
        torch.manual_seed(0)  # same drop-path and dropout draws
        model(pixels, labels=labels).loss.backward()
    assert len(calls) == 2  # the block ran again in the backward pass: checkpointing is on
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=1e-6, msg=name)
    for (name, a), b in zip(plain.named_buffers(), checkpointed.buffers()):  # BatchNorm counts the batch once
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6, msg=name)
    with torch.no_grad():  # and nothing changes in eval mode
        checkpointed.eval(), plain.eval()
        torch.testing.assert_close(checkpointed(pixels).logits, plain(pixels).logits, rtol=0, atol=0)


# ------------------------------------------------------------------------------ the Keras mirror
def test_keras_classes_have_the_same_forward_surface(fixtures_dir):
    pytest.importorskip("keras")
    from efficientformer.models.keras import models as tfm
    folder = fixtures_dir / "hf-tiny"
    keras_model = tfm.TFEfficientFormerForImageClassificationWithTeacher.from_pretrained(folder)
    torch_model = EfficientFormerForImageClassificationWithTeacher.from_pretrained(folder)
    pixels = np.load(folder / "expected.npz")["pixel_values"]
    assert keras_model.feature_info.channels() == torch_model.feature_info.channels()
    assert keras_model.feature_info.reduction() == torch_model.feature_info.reduction()
    for kwargs in (dict(), dict(indices=[1], stop_early=True), dict(indices=1, norm=True), dict(out_indices=(0, 2))):
        got = keras_model.forward_intermediates(pixels, **kwargs)
        with torch.no_grad():
            expected = torch_model.forward_intermediates(torch.from_numpy(pixels), **kwargs)
        if "out_indices" not in kwargs:
            (got_final, got), (expected_final, expected) = got, expected
            np.testing.assert_allclose(np.asarray(got_final), expected_final.numpy(), atol=1e-5, rtol=0)
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            np.testing.assert_allclose(np.asarray(a), b.numpy(), atol=1e-5, rtol=0)
    # forward_head averages both heads, as the call's logits
    tokens = keras_model.forward_features(pixels)
    np.testing.assert_allclose(np.asarray(keras_model.forward_head(tokens)), np.asarray(keras_model(pixels).logits),
                               atol=1e-6, rtol=0)
    assert tuple(keras_model.forward_head(tokens, pre_logits=True).shape) == (2, 32)
    for bad, message in ((np.zeros((0, 3, 224, 224), "float32"), "no images"),
                         (np.full((1, 3, 64, 64), np.nan, "float32"), "NaN or infinite")):
        for call in (keras_model, keras_model.forward_intermediates):
            with pytest.raises(InputError, match=message):
                call(bad)


def test_keras_features_only_backbone_and_reset_classifier_mirror_pytorch(fixtures_dir, tmp_path):
    pytest.importorskip("keras")
    from efficientformer.errors import ConfigError
    from efficientformer.models.keras import models as tfm
    folder = fixtures_dir / "hf-tiny"
    pixels = np.load(folder / "expected.npz")["pixel_values"]
    with pytest.warns(UserWarning, match="not used by TFEfficientFormerModel"):  # the folder's heads
        keras_backbone = tfm.TFEfficientFormerModel.from_pretrained(folder, out_indices=(1, 3))
    torch_backbone = EfficientFormerModel.from_pretrained(folder, out_indices=(1, 3))
    with torch.no_grad():
        expected = torch_backbone(torch.from_numpy(pixels))
    got = keras_backbone(pixels)
    assert len(got) == 2 and keras_backbone.feature_info.channels() == torch_backbone.feature_info.channels()
    for a, b in zip(got, expected):
        np.testing.assert_allclose(np.asarray(a), b.numpy(), atol=1e-5, rtol=0)
    # the features-only setting survives Keras' own serialization
    again = tfm.TFEfficientFormerModel.from_config(keras_backbone.get_config())
    assert again.out_indices == (1, 3)
    with pytest.raises(ConfigError, match="TFEfficientFormerModel.from_pretrained"):
        tfm.TFEfficientFormerForImageClassification.from_pretrained(folder, out_indices=(1, 3))

    # reset_classifier: new heads of the new size, the old weights gone from the model, saved and reloaded
    model = tfm.TFEfficientFormerForImageClassificationWithTeacher.from_pretrained(folder)
    count = len(model.weights)
    model.reset_classifier(7)
    assert model.config.num_labels == 7 and tuple(model(pixels).logits.shape) == (2, 7)
    assert len(model.weights) == count and all(w.shape[-1] == 7 for w in model.get_classifier()[0].weights)
    model.save_pretrained(tmp_path / "seven")
    reloaded = tfm.TFEfficientFormerForImageClassificationWithTeacher.from_pretrained(tmp_path / "seven")
    np.testing.assert_allclose(np.asarray(reloaded(pixels).logits), np.asarray(model(pixels).logits), atol=1e-6,
                               rtol=0)
    with pytest.raises(InputError, match="num_classes"):
        model.reset_classifier(-1)
