"""``is`` with a classifier from a file (``-M is.classifier=FILE``): the CUB papers' fine-tuned Inception-v3 in
its PyTorch form. The test writes a torchvision-layout state dict (full architecture, 200-class ``fc``, random
weights) and checks, each where it is cheap: the file loads into a network computing what torchvision's own does
with it; images reach it as StackGAN's evaluation prepares them; the score equals StackGAN's formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models.inception import Inception3

from t2i.errors import UsageError
from t2i.metrics.build import build_metrics
from t2i.metrics.damsm import inception_input
from t2i.metrics.image_sets import tensor_images
from t2i.metrics.inception_metrics import InceptionClassifier, ISConfig
from t2i.weights import file_sha256

CLASSES = 200


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory):
    """A fine-tuned-CUB-Inception-shaped state dict: torchvision Inception3, 200-class fc and AuxLogits.fc."""
    torch.manual_seed(0)
    net = Inception3(num_classes=CLASSES, aux_logits=True, init_weights=False)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("conv.weight"):
                p.mul_(6**0.5)  # He scale: activations neither vanish into slow denormals nor explode
    path = tmp_path_factory.mktemp("is") / "inception_cub200.pth"
    torch.save(net.state_dict(), path)
    return path


def stackgan_inception_score(logits: torch.Tensor, splits: int, seed: int) -> tuple[float, float]:
    """StackGAN's get_inception_score on softmax(logits), after the seeded shuffle t2i records."""
    preds = torch.softmax(logits.double(), 1).numpy()[np.random.RandomState(seed).permutation(len(logits))]
    scores = []
    for i in range(splits):
        part = preds[i * len(preds) // splits : (i + 1) * len(preds) // splits]
        kl = part * (np.log(part) - np.log(np.mean(part, 0, keepdims=True)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return float(np.mean(scores)), float(np.std(scores))


def test_classifier_file_loads_every_tensor_into_torchvisions_network(classifier_file):
    """Key mapping on the real architecture: the classifier is torchvision's Inception3 (its own forward) holding
    exactly the file's tensors, in evaluation mode (no dropout; batch norm from the stored statistics)."""
    state = torch.load(classifier_file, weights_only=True)
    classifier = InceptionClassifier(classifier_file)
    assert isinstance(classifier.net, Inception3) and not classifier.net.training
    loaded = classifier.net.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert classifier.dims == {"logits": CLASSES}


def test_classifier_preprocessing_is_stackgans_and_background_is_dropped(classifier_file):
    """StackGAN's input: PIL bilinear to 299 (scipy.misc.imresize), x / 127.5 - 1; its TF-slim network's class 0
    is "background", dropped before the softmax (``background=True``)."""
    images = torch.randint(0, 256, (2, 40, 40, 3), generator=torch.Generator().manual_seed(1)).to(torch.uint8)
    by_hand = np.stack([np.asarray(Image.fromarray(im).resize((299, 299), Image.BILINEAR)) for im in images.numpy()])
    want = torch.from_numpy(by_hand).permute(0, 3, 1, 2).float() / 127.5 - 1
    torch.testing.assert_close(inception_input(images, "pil_bilinear", "minus_one_one"), want, rtol=0, atol=0)

    classifier = InceptionClassifier(classifier_file, background=True, classes=CLASSES - 1)
    seen = []
    logits = torch.randn(2, CLASSES)
    classifier.net = lambda x: seen.append(x) or logits  # the network itself is checked above
    assert torch.equal(classifier(images)["logits"], logits[:, 1:])
    torch.testing.assert_close(seen[0], want, rtol=0, atol=0)


class FixedLogits:
    """The seam: an extractor returning given logits (the full network costs seconds per image on a CPU)."""

    name = "fixed"
    weights_sha256 = "0" * 64

    def __init__(self, logits: torch.Tensor):
        self.logits, self.dims, self.at = logits, {"logits": logits.shape[1]}, 0

    def __call__(self, images):
        out = self.logits[self.at : self.at + len(images)]
        self.at += len(images)
        return {"logits": out}

    def protocol(self):
        return {"extractor": "fixed", "classes": self.dims["logits"]}

    def cache_key(self):
        return {"extractor": "fixed"}


def test_is_from_classifier_logits_equals_stackgans_formula_rel_1e9(classifier_file):
    logits = torch.randn(100, CLASSES, generator=torch.Generator().manual_seed(2)) * 4
    options = {"classifier": str(classifier_file), "splits": "10", "batch_size": "16"}
    ((_, metric, full),) = build_metrics(["is"], {"is": options})
    metric._extractor = FixedLogits(logits)
    result = metric.compare(tensor_images(torch.zeros(100, 8, 8, 3, dtype=torch.uint8)), None)
    mean, std = stackgan_inception_score(logits, splits=10, seed=2020)
    assert mean > 5  # a real score, not 1 == 1
    assert result["is"] == pytest.approx(mean, rel=1e-9)
    assert result["is/std"] == pytest.approx(std, rel=1e-7)
    protocol = result["protocol"]
    assert protocol["splits"] == 10 and protocol["n"] == 100 and protocol["classes"] == CLASSES
    assert protocol["feature"] == "logits of the classifier's fc (200 classes, with bias)"
    assert full["classifier"] == str(classifier_file) and full["resize"] == "pil_bilinear"


def test_classifier_protocol_records_file_classes_resize(classifier_file):
    extractor = InceptionClassifier(classifier_file, resize="bilinear_align_corners", normalize="imagenet")
    protocol = extractor.protocol()
    assert protocol["weights_sha256"] == file_sha256(classifier_file) and protocol["classes"] == CLASSES
    assert "align_corners=True" in protocol["resize"] and "0.485" in protocol["normalize"]
    assert extractor.cache_key()["resize"] == "bilinear_align_corners"


def test_imagenet_inception_stays_the_default():
    cfg = ISConfig()
    assert cfg.classifier == "" and cfg.splits == 10
    ((_, metric, _),) = build_metrics(["is"], {})
    assert metric.features == ("logits_unbiased",)


def test_classifier_mistakes_are_one_line_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="nope.pth is not a file"):
        InceptionClassifier(tmp_path / "nope.pth")
    # the layout's every key and shape, as zero-stride tensors: files of a few kB instead of 90 MB
    with torch.device("meta"):
        layout = Inception3(num_classes=CLASSES, aux_logits=True, init_weights=False).state_dict()
    state = {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in layout.items()}
    torch.save(state, tmp_path / "cub200.pth")
    with pytest.raises(UsageError, match=r"scores 200 classes, expected 50 \(is.classes\)") as info:
        InceptionClassifier(tmp_path / "cub200.pth", classes=50)
    assert str(tmp_path / "cub200.pth") in str(info.value)
    torch.save({k.replace("Mixed_7c", "Mixed_7x"): v for k, v in state.items()}, tmp_path / "renamed.pth")
    with pytest.raises(UsageError) as info:
        InceptionClassifier(tmp_path / "renamed.pth")
    message = str(info.value)
    assert "\n" not in message and "renamed.pth does not hold an Inception-v3 classifier" in message
    assert "keys missing (Mixed_7c." in message and "unexpected (Mixed_7x." in message

    state["Mixed_6e.branch7x7_1.conv.weight"] = torch.zeros(3, 3, 1, 1)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(UsageError, match=r"of another shape \(Mixed_6e.branch7x7_1.conv.weight is \(3, 3, 1, 1\)"):
        InceptionClassifier(tmp_path / "shape.pth")

    torch.save({"fc.weight": torch.zeros(10, 5)}, tmp_path / "tiny.pth")
    with pytest.raises(UsageError, match=r"tiny.pth does not hold .*no fc.weight of shape \(classes, 2048\)"):
        InceptionClassifier(tmp_path / "tiny.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(UsageError, match="junk.pth cannot be read as a PyTorch state dict"):
        InceptionClassifier(tmp_path / "junk.pth")


def test_classifier_options_without_a_classifier_are_refused():
    with pytest.raises(UsageError, match="classes, resize describe a classifier from a file"):
        build_metrics(["is"], {"is": {"classes": "200", "resize": "bilinear"}})
    with pytest.raises(UsageError, match="with classifier=FILE use resize and normalize"):
        build_metrics(["is"], {"is": {"classifier": "x.pth", "mode": "clean"}})
    assert ISConfig(classifier="x.pth", classes=200).classes == 200
