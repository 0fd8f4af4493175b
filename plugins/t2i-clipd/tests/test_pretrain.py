"""``t2i clip pretrain`` (t2i_clipd.pretrain): the file it writes loads as a CLIP (core ``load_clip``) and as
clipd's frozen ViT, its JSON records what was trained and the retrieval check, the loss goes down, a seed
reproduces the weights, fine-tuning starts from the given weights (temperature clamped as open-clip does),
open-clip's optimiser conventions hold, the retrieval count is right, and bad input is one line with exit 2.
A CLIP of width 16 on a 64-image Shapes split keeps it cheap."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from t2i.clip import ClipBundle, load_clip
from t2i.errors import UsageError
from t2i.plugins import registry
from t2i.testing.fixtures import one_intra_op_thread  # noqa: F401  (autouse: one thread here)
from t2i_clipd import ClipDConfig, ClipDiscriminator
from t2i_clipd.pretrain import _learning_rate, _param_groups, pretrain_clip, retrieval_accuracy

TINY_CLIP = {  # a 32 px ViT (patch 8: a 4 x 4 grid, 2 blocks of width 16) and a one-block text tower
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 16, "patch_size": 8, "head_width": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}
DATA = ["--data", "shapes", "-d", "train_size=64", "-d", "test_size=100", "--resolution", "32"]


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny-pretrain-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    return str(path)


@pytest.fixture(scope="module")
def splits():
    dataset, _ = registry("datasets").build("shapes", {"train_size": 64, "test_size": 100})
    return dataset.load("train", 32), dataset.load("test", 32)


def invoke(args):
    """``t2i ARGS`` with the commands the installed plugins register (the plugins' hook, as the CLI calls it)."""
    import typer
    from typer.testing import CliRunner

    from t2i.plugins import add_commands

    app = typer.Typer()
    add_commands(app)
    return CliRunner().invoke(app, args)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, config):
    """A CLIP pretrained by the command: 60 steps of 16 pairs, retrieval checked on 100 test images."""
    out = tmp_path_factory.mktemp("clip") / "shapes-clip.pt"
    result = invoke(["clip", "pretrain", *DATA, "--model", config, "--steps", "60", "--batch-size", "16",
                     "--lr", "2e-3", "--warmup", "5", "--seed", "3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "-D weights=" in result.output and "-T weights=" in result.output  # how to use it
    return out


def test_the_file_loads_as_a_clip_and_as_clipds_vit(trained, config):
    saved = torch.load(trained)
    bundle = load_clip(config, weights=str(trained))  # the core's loader: clip text encoder, clip_sim
    assert all(torch.equal(v, saved[k]) for k, v in bundle.model.state_dict().items())
    assert bundle.encode_text(["a small red circle in the center on a black background"]).shape == (1, 16)
    d = ClipDiscriminator(ClipDConfig(model=config, weights=str(trained), layers=(0, 1), head_width=8,
                                      joint_width=4), resolution=32, text_dim=16)
    assert torch.equal(d.vit.visual.conv1.weight, saved["visual.conv1.weight"]) and d.vit.grid == 4
    assert d(torch.rand(2, 3, 32, 32) * 2 - 1, torch.randn(2, 16)).logits.shape[0] == 2


def test_the_json_records_what_was_trained_and_the_loss_goes_down(trained, config):
    info = json.loads(trained.with_name("shapes-clip.pt.json").read_text())
    assert (info["model"], info["model_name"], info["model_config"]) == (config, "tiny-pretrain-clip", TINY_CLIP)
    assert (info["steps"], info["batch_size"], info["lr"], info["warmup"], info["seed"]) == (60, 16, 2e-3, 5, 3)
    assert (info["resolution"], info["train_size"], info["vit_blocks"], info["weights"]) == (32, 64, 2, None)
    assert info["data"]["name"] == "shapes" and info["data"]["split"] == "train"
    assert info["last_loss"] < info["first_loss"] * 0.8  # it learns
    retrieval = info["retrieval"]
    assert (retrieval["split"], retrieval["images"], retrieval["batch"]) == ("test", 100, 100)
    assert retrieval["chance"] == 0.01
    for when in ("before", "after"):
        assert set(retrieval[when]) == {"captions", "held_out_phrasings"}
        assert all(0 <= v <= 1 for scores in retrieval[when].values() for v in scores.values())
    assert info["file"] == "shapes-clip.pt" and len(info["sha256"]) == 64 and info["seconds"] > 0


def test_the_same_seed_gives_the_same_weights(tmp_path, config, splits):
    train, _ = splits
    options = {"model": config, "steps": 3, "batch_size": 8, "warmup": 1}
    pretrain_clip(train, tmp_path / "a.pt", seed=1, **options)
    pretrain_clip(train, tmp_path / "b.pt", seed=1, **options)
    pretrain_clip(train, tmp_path / "c.pt", seed=2, **options)
    a, b, c = (torch.load(tmp_path / f"{n}.pt") for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["visual.conv1.weight"], c["visual.conv1.weight"])


def test_fine_tuning_starts_from_the_given_weights(tmp_path, trained, config, splits):
    """From the command's file with its temperature set above 100, one step at a negligible learning rate and
    another seed: the weights stay the file's (a random start from seed 9 would not), the retrieval measured
    before is the file's own after training, and the temperature is clamped to 100 as open-clip does."""
    _, test = splits
    start = torch.load(trained)
    start["logit_scale"] = torch.tensor(5.0)  # exp(5) = 148 > 100
    torch.save(start, tmp_path / "start.pt")
    info = pretrain_clip(splits[0], tmp_path / "tuned.pt", model=config, weights=tmp_path / "start.pt", steps=1,
                         batch_size=8, lr=1e-9, warmup=0, seed=9, test=test, eval_size=100)
    tuned = torch.load(tmp_path / "tuned.pt")
    assert all(torch.allclose(tuned[k], v, atol=1e-6) for k, v in start.items() if k != "logit_scale")
    assert tuned["logit_scale"].item() == pytest.approx(math.log(100))
    first = json.loads(trained.with_name("shapes-clip.pt.json").read_text())
    assert info["retrieval"]["before"] == first["retrieval"]["after"]
    assert info["weights"] == str(tmp_path / "start.pt")


def test_open_clips_optimiser_conventions(config):
    from t2i_clipd.pretrain import _build

    net, _ = _build(config, None, 0)
    no_decay, decay = _param_groups(net, 0.2)
    names = {id(p): n for n, p in net.named_parameters()}
    exempt = {names[id(p)] for p in no_decay["params"]}
    assert {"logit_scale", "positional_embedding", "token_embedding.weight", "visual.class_embedding",
            "visual.positional_embedding", "ln_final.weight", "ln_final.bias"} <= exempt
    assert {names[id(p)] for p in decay["params"]} >= {"visual.conv1.weight", "text_projection", "visual.proj"}
    assert (no_decay["weight_decay"], decay["weight_decay"]) == (0.0, 0.2)
    assert len(exempt) + len(decay["params"]) == len(names)
    lrs = [_learning_rate(s, 10, 1.0, 4) for s in range(10)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0] and lrs[4] == 1.0  # linear warmup, then the cosine from the peak
    assert lrs[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 6)))


class _Oracle(nn.Module):
    """A stand-in CLIP: image ``i``'s embedding is the one-hot of its first pixel's value; a caption's is the one-hot
    of the id in its text (``shuffle`` maps caption ``c`` to image ``shuffle[c]``'s embedding)."""

    def __init__(self, shuffle):
        super().__init__()
        self.shuffle = shuffle
        self.anchor = nn.Parameter(torch.zeros(1))


def _oracle_bundle(shuffle, dim=8):
    model = _Oracle(shuffle)
    tokenizer = lambda texts: torch.tensor([[int(t)] for t in texts])  # noqa: E731
    bundle = ClipBundle(model, tokenizer, "oracle", "", "", 2, (0.0,), (1.0,))
    bundle.encode_image = lambda images: nn.functional.one_hot(images[:, 0, 0, 0].long(), dim).float()
    bundle.encode_tokens = lambda tokens: (nn.functional.one_hot(shuffle[tokens[:, 0]], dim).float(), None, None)
    return bundle


def test_retrieval_counts_top1_within_batches_and_identical_images_as_right():
    from t2i.interfaces import CaptionedImages

    values = torch.tensor([0, 1, 2, 3, 4, 5, 6, 6])  # images 6 and 7 are identical
    split = CaptionedImages(images=values.view(8, 1, 1, 1).expand(8, 2, 2, 3).to(torch.uint8).contiguous(),
                            captions=[str(i) for i in range(8)], caption_ids=torch.arange(8)[:, None],
                            caption_counts=torch.ones(8, dtype=torch.long), info={"split": "test"})
    perfect = retrieval_accuracy(_oracle_bundle(values), split, batch=4)
    assert perfect["captions"] == {"image_to_caption": 1.0, "caption_to_image": 1.0}
    assert (perfect["images"], perfect["batch"], perfect["chance"]) == (8, 4, 0.25)
    assert perfect["chance_with_duplicates"] == 0.3125  # (4 + 6) pairs of identical images of 2 x 16
    swapped = torch.tensor([1, 0, 2, 3, 4, 5, 6, 6])  # captions 0 and 1 describe each other's image
    assert retrieval_accuracy(_oracle_bundle(swapped), split, batch=4)["captions"] == {
        "image_to_caption": 0.75, "caption_to_image": 0.75}
    across = torch.tensor([0, 4, 2, 3, 4, 5, 6, 6])  # caption 1 is image 4's, in the other batch: a miss each way
    assert retrieval_accuracy(_oracle_bundle(across), split, batch=4)["captions"] == {
        "image_to_caption": 0.875, "caption_to_image": 0.875}


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "--steps must be >= 1"),
    (["--batch-size", "1"], "--batch-size >= 2"),
    (["--steps", "10", "--warmup", "10"], "--warmup must be >= 0 and less than --steps 10"),
    (["-o", "clip.safetensors"], "write the weights to a .pt file"),
    (["--weights", "nowhere.pt"], "--weights nowhere.pt is not a file"),
    (["--model", "ViT-B-23"], "unknown CLIP model 'ViT-B-23'"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, config, args, message):
    from t2i.cli import main

    monkeypatch.chdir(tmp_path)
    base = {"--model": config, "-o": "clip.pt", "--steps": "5", "--eval-size": "0"}
    given = dict(zip(args[::2], args[1::2]))
    argv = ["clip", "pretrain", *DATA, *[x for k, v in (base | given).items() for x in (k, v)]]
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("t2i: error:")]
    assert len(err) == 1 and message in err[0], err


def test_weights_that_do_not_fit_the_model_are_one_line(tmp_path, config, splits):
    torch.save({"visual.conv1.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(UsageError, match="do not fit model 'tiny-pretrain-clip'"):
        pretrain_clip(splits[0], tmp_path / "x.pt", model=config, weights=tmp_path / "other.pt", steps=1,
                      batch_size=2, warmup=0)
    assert not (tmp_path / "x.pt").exists()
