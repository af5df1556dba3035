"""torch_layerlr.models.vision and the synthetic dataset: the paper's MLP and ConvNet against the same networks
written with plain functional ops, output shapes for 1- and 3-channel images, and the layer groups."""

import pytest
import torch
from torch.nn import functional as F

from torch_layerlr.data import synthetic_images
from torch_layerlr.models.vision import MODELS, ConvNet, build_model

SHAPES = [(1, 28), (3, 32)]


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("channels,size", SHAPES)
def test_output_shape(name, channels, size):
    model = build_model(name, channels, size, 10)
    assert model(torch.randn(4, channels, size, size)).shape == (4, 10)


@pytest.mark.parametrize("name,groups", [("mlp", 4), ("convnet", 2), ("resnet", 5)])
def test_top_level_children_are_the_layer_groups(name, groups):
    assert len(list(build_model(name, 1, 28, 10).children())) == groups


def reference_mlp(model, x):
    h = x.flatten(1)
    for layer in (model.layer1, model.layer2, model.layer3):
        h = torch.clamp(h @ layer.weight.T + layer.bias, min=0)
    return h @ model.layer4.weight.T + model.layer4.bias


def reference_convnet(model, x):
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    h = x
    for conv in convs:
        h = F.max_pool2d(torch.clamp(F.conv2d(h, conv.weight, conv.bias, padding=1), min=0), 2)
    fc1, fc2 = model.classifier[0], model.classifier[2]
    h = torch.clamp(h.reshape(h.shape[0], -1) @ fc1.weight.T + fc1.bias, min=0)
    return h @ fc2.weight.T + fc2.bias


@pytest.mark.parametrize("channels,size", SHAPES)
def test_mlp_and_convnet_match_functional_reference(channels, size):
    torch.manual_seed(0)
    x = torch.randn(3, channels, size, size, dtype=torch.float64)
    for name, reference in (("mlp", reference_mlp), ("convnet", reference_convnet)):
        model = build_model(name, channels, size, 10).double()
        torch.testing.assert_close(model(x), reference(model, x), rtol=1e-12, atol=1e-12)


def test_convnet_flattened_size_follows_the_image():
    assert ConvNet(1, 28).classifier[0].in_features == 128 * 3 * 3
    assert ConvNet(3, 32).classifier[0].in_features == 128 * 4 * 4


def test_resnet_residual_block_adds_its_shortcut():
    torch.manual_seed(0)
    model = build_model("resnet", 3, 32, 10).eval()
    block = model.stage1
    x = torch.randn(2, 32, 8, 8)
    out = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
    torch.testing.assert_close(block(x), torch.relu(out + x))


def test_build_model_errors():
    with pytest.raises(ValueError, match="model must be one of"):
        build_model("vgg", 1, 28, 10)
    with pytest.raises(ValueError, match="image_size"):
        build_model("convnet", 1, 4, 10)


def test_synthetic_images_deterministic_and_shaped():
    a = synthetic_images(num_train=50, num_test=20, image_size=12, channels=3, num_classes=4, seed=3)
    b = synthetic_images(num_train=50, num_test=20, image_size=12, channels=3, num_classes=4, seed=3)
    c = synthetic_images(num_train=50, num_test=20, image_size=12, channels=3, num_classes=4, seed=4)
    assert torch.equal(a.train_images, b.train_images) and torch.equal(a.test_labels, b.test_labels)
    assert not torch.equal(a.train_images, c.train_images)
    assert a.train_images.shape == (50, 3, 12, 12) and a.train_images.dtype == torch.uint8
    assert a.test_images.shape == (20, 3, 12, 12) and a.num_classes == 4
    assert int(a.train_labels.min()) >= 0 and int(a.train_labels.max()) < 4


def test_synthetic_images_classes_are_their_prototypes():
    # Without noise every image of a class is the same picture, and different classes differ.
    data = synthetic_images(num_train=200, num_test=10, noise=0.0, seed=1)
    for k in range(data.num_classes):
        members = data.train_images[data.train_labels == k]
        assert len(members) > 0 and bool((members == members[0]).all())
    firsts = torch.stack([data.train_images[data.train_labels == k][0] for k in range(data.num_classes)])
    assert len({bytes(img.numpy().tobytes()) for img in firsts}) == data.num_classes


@pytest.mark.parametrize("kwargs,name", [(dict(num_classes=1), "num_classes"), (dict(noise=-1.0), "noise"),
                                          (dict(num_train=0), "num_train"), (dict(image_size=2.5), "image_size")])
def test_synthetic_images_errors(kwargs, name):
    with pytest.raises(ValueError, match=name):
        synthetic_images(**kwargs)
