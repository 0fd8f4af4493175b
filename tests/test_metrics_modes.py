"""FID/KID modes: ``clean`` checked against clean-fid and ``legacy_pytorch`` against pytorch-fid themselves, on the
same images and the same (random, test-written) weights file; ``legacy_tensorflow`` (torch-fidelity's, the
default) is checked in test_metrics_inception.py.

clean-fid's own network for ``clean`` is a TorchScript file it downloads, so its ``compute_fid`` is given the
network of that weights file as ``custom_feat_extractor``, doing what clean-fid's ``InceptionV3W`` does with a
299 x 299 input (``(x - 128) / 128``, then the layers): clean-fid's folder reading, resize, batching and
Frechet distance run unchanged. pytorch-fid's ``InceptionV3`` loads the same file as its own weights (same key
names) and runs whole: its resize, normalisation and layers.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from t2i.errors import UsageError
from t2i.metrics.image_sets import folder_images
from t2i.metrics.inception import InceptionFeatures, forward_normalised, network_input, write_random_inception_weights
from t2i.metrics.inception_metrics import FID, KID, InceptionMetricConfig, KIDConfig
from t2i.metrics.reference_stats import load_reference_stats, save_reference_stats
from t2i.plugins import registry

N = 6  # images per side
# clean-fid's and pytorch-fid's scipy sqrtm on 6-image (singular) covariances: their warnings, not ours
pytestmark = pytest.mark.filterwarnings("ignore:The `disp` argument:DeprecationWarning", "ignore::scipy.linalg.LinAlgWarning")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_random_inception_weights(tmp_path_factory.mktemp("inception") / "random-inception.pth", seed=0)


@pytest.fixture(scope="module")
def images():
    """Two different sets of N Shapes renders at 32 px: uint8 (N, 32, 32, 3) each."""
    torch.set_num_threads(1)
    reg = registry("datasets")
    data = reg.create("shapes", reg.make_config("shapes", {"train_size": 64, "test_size": 2 * N})).load("test", 32)
    return data.images[:N].clone(), data.images[N:].clone()


@pytest.fixture(scope="module")
def folders(images, tmp_path_factory):
    root = tmp_path_factory.mktemp("folders")
    for name, part in (("gen", images[0]), ("real", images[1])):
        (root / name).mkdir()
        for i, im in enumerate(part):
            Image.fromarray(im.numpy()).save(root / name / f"{i:03d}.png")
    return root / "gen", root / "real"


def _extractor(weights, mode):
    return InceptionFeatures(weights, features=("pool3",), batch_size=N, mode=mode)


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


# -- clean: clean-fid ------------------------------------------------------------------------------------
class _CleanFidNet(torch.nn.Module):
    """clean-fid's InceptionV3W with resize_inside=False, on the weights file's network: [0, 255] 299 px -> pool3."""

    def __init__(self, extractor):
        super().__init__()
        self.extractor = extractor

    def forward(self, x):
        assert x.shape[2:] == (299, 299)
        return forward_normalised(self.extractor.net, (x - 128) / 128, ("pool3",))["pool3"]


def test_clean_mode_network_input_is_clean_fids_resize_exactly(images):
    from cleanfid.resize import build_resizer
    from torchvision.transforms import ToTensor

    resize = build_resizer("clean")  # make_resizer("PIL", False, "bicubic", (299, 299))
    theirs = torch.stack([ToTensor()(resize(im.numpy())) for im in images[0]])  # what clean-fid's ResizeDataset yields
    assert theirs.dtype == torch.float32 and theirs.shape == (N, 3, 299, 299)
    torch.testing.assert_close(network_input(images[0], "clean"), (theirs - 128) / 128, rtol=0, atol=0)


def test_clean_mode_matches_clean_fid_features_to_1e_5_and_fid_to_1e_4(folders, weights, tmp_path):
    from cleanfid import fid as cleanfid

    ex = _extractor(weights, "clean")
    net, cpu = _CleanFidNet(ex), torch.device("cpu")
    opts = dict(mode="clean", num_workers=0, batch_size=N, device=cpu, verbose=False)
    theirs = torch.from_numpy(cleanfid.get_folder_features(str(folders[0]), net, **opts))
    ours = ex(torch.stack(list(folder_images(folders[0]).batches(N)))[0])["pool3"]
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)

    their_fid = cleanfid.compute_fid(str(folders[0]), str(folders[1]), custom_feat_extractor=net, use_dataparallel=False, **opts)
    cfg = InceptionMetricConfig(mode="clean", device="cpu", batch_size=N, cache_dir=str(tmp_path))
    result = FID(cfg, extractor=ex).compare(folder_images(folders[0]), folder_images(folders[1]))
    assert result["fid"] > 0 and _rel(result["fid"], float(their_fid)) <= 1e-4
    p = result["protocol"]
    assert p["mode"] == "clean" and "PIL bicubic" in p["resize"] and p["weights_sha256"] == ex.weights_sha256


# -- legacy_pytorch: pytorch-fid ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pytorch_fid_net(weights):
    """pytorch-fid's own InceptionV3 (pool3 block), loading the weights file as its FID weights."""
    from unittest import mock

    import pytorch_fid.inception as pfi

    state = torch.load(weights, map_location="cpu", weights_only=True)
    with mock.patch.object(pfi, "load_state_dict_from_url", lambda *a, **k: state):
        return pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()


def test_legacy_pytorch_mode_matches_pytorch_fid_input_exactly_and_features_to_1e_5(images, weights, pytorch_fid_net):
    seen = []
    hook = pytorch_fid_net.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        with torch.no_grad():  # pytorch-fid's get_activations: ToTensor()'s [0, 1] floats in
            theirs = pytorch_fid_net(images[0].permute(0, 3, 1, 2).float().div(255))[0].squeeze(3).squeeze(2)
    finally:
        hook.remove()
    torch.testing.assert_close(network_input(images[0], "legacy_pytorch"), seen[0], rtol=0, atol=0)
    ours = _extractor(weights, "legacy_pytorch")(images[0])["pool3"]
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_legacy_pytorch_mode_matches_pytorch_fid_fid_to_1e_4(folders, weights, tmp_path, monkeypatch):
    import pytorch_fid.inception as pfi
    from pytorch_fid import fid_score

    state = torch.load(weights, map_location="cpu", weights_only=True)
    monkeypatch.setattr(pfi, "load_state_dict_from_url", lambda *a, **k: state)  # all else is pytorch-fid's own
    theirs = fid_score.calculate_fid_given_paths([str(folders[0]), str(folders[1])], N, "cpu", 2048, num_workers=0)
    cfg = InceptionMetricConfig(mode="legacy_pytorch", weights=str(weights), device="cpu", batch_size=N, cache_dir=str(tmp_path))
    result = FID(cfg).compare(folder_images(folders[0]), folder_images(folders[1]))
    assert result["fid"] > 0 and _rel(result["fid"], float(theirs)) <= 1e-4
    assert result["protocol"]["mode"] == "legacy_pytorch" and "F.interpolate bilinear" in result["protocol"]["resize"]


# -- the modes side by side ----------------------------------------------------------------------------------
def test_modes_give_different_features_caches_and_statistics(images, weights, tmp_path):
    by_mode = {m: _extractor(weights, m) for m in ("legacy_tensorflow", "clean", "legacy_pytorch")}
    feats = {m: ex(images[0][:2])["pool3"] for m, ex in by_mode.items()}
    assert not torch.allclose(feats["clean"], feats["legacy_tensorflow"], rtol=1e-3)
    assert not torch.allclose(feats["legacy_pytorch"], feats["legacy_tensorflow"], rtol=1e-3)
    keys = [ex.cache_key() for ex in by_mode.values()]
    assert len({str(sorted(k.items())) for k in keys}) == 3
    assert "mode" not in by_mode["legacy_tensorflow"].cache_key()  # caches from before the modes stay valid
    assert by_mode["legacy_tensorflow"].protocol()["mode"] == "legacy_tensorflow"

    # t2i-written statistics of one mode are refused by another
    path = save_reference_stats(by_mode["clean"], folder_images_of(images[1][:3], tmp_path), tmp_path / "clean.npz")
    with pytest.raises(UsageError, match="computed in mode clean, not the legacy_pytorch") as err:
        load_reference_stats(path, by_mode["legacy_pytorch"])
    assert "\n" not in str(err.value)
    assert load_reference_stats(path, by_mode["clean"])[1]["written_by"]["mode"] == "clean"

    # a metric handed an extractor of another mode says so
    kid = KID(KIDConfig(mode="clean", subset_size=2, cache=False), extractor=by_mode["legacy_pytorch"])
    with pytest.raises(UsageError, match="mode=clean but its shared extractor runs mode=legacy_pytorch"):
        kid.compare(folder_images_of(images[0][:2], tmp_path / "a"), folder_images_of(images[1][:2], tmp_path / "b"))


def folder_images_of(part, folder):
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(part):
        Image.fromarray(im.numpy()).save(folder / f"{i:03d}.png")
    return folder_images(folder)


def test_unknown_mode_is_a_one_line_usage_error_with_a_suggestion(weights):
    with pytest.raises(UsageError) as err:
        InceptionMetricConfig(mode="clean_fid")
    assert "did you mean 'clean'?" in str(err.value) and "legacy_pytorch" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UsageError, match="unknown Inception mode 'tf'"):
        InceptionFeatures(weights, mode="tf")
    with pytest.raises(UsageError, match="did you mean 'legacy_pytorch'"):
        registry("metrics").build("fid", {"mode": "legacy_pytorh"})
