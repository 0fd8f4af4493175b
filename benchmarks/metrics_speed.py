"""FID end to end on the same two image folders with t2i, torch-fidelity, pytorch-fid and clean-fid.

The images: the built-in Shapes data, ``--n`` renders of the test split against ``--n`` of the train split,
written once as PNG folders (``--workdir``). Each tool then goes from the two folders to one FID value, with
no cache from an earlier run; the script prints seconds, the ratio to t2i and each value with its relative
difference from t2i's.

Same weights for all, offline: ``--weights PATH`` is torch-fidelity's Inception file
(``weights-inception-2015-12-05-6726825d.pth``); ``--random-weights`` writes a random file of the same
layout for a smoke run (its FID values mean nothing about the images; the timings and the agreement between
tools still do). How each tool gets those weights:

- t2i: ``t2i.metrics.compare.evaluate_images`` (what ``t2i eval A --reference B -m fid`` runs);
- torch-fidelity: ``calculate_metrics(fid=True, feature_extractor_weights_path=...)``;
- pytorch-fid: its own network (torchvision Inception3 with the FID blocks) given the same state dict
  (the parameter names are the same); but it resizes with PyTorch's bilinear, not TF 1.x's, so its value
  differs slightly by design;
- clean-fid: its ``legacy_tensorflow`` mode (no resize outside the network) with torch-fidelity's network
  and the same file as ``custom_feat_extractor``; its default ``clean`` mode needs its own TorchScript
  Inception (a download), which cannot be compared on identical weights offline.

    .venv/bin/python benchmarks/metrics_speed.py --weights ~/.cache/torch/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth
    .venv/bin/python benchmarks/metrics_speed.py --random-weights --n 200 --device cpu   # smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch


def render_folders(workdir: Path, n: int, resolution: int) -> tuple[Path, Path]:
    """Shapes test[:n] -> workdir/test-N-Rpx, train[:n] -> workdir/train-N-Rpx (PNG; reused if complete)."""
    from PIL import Image

    from t2i.plugins import registry

    reg = registry("datasets")
    data = reg.create("shapes", reg.make_config("shapes", {"test_size": max(n, 64), "train_size": max(n, 64)}))
    folders = []
    for split in ("test", "train"):
        folder = workdir / f"{split}-{n}-{resolution}px"
        if len(list(folder.glob("*.png"))) != n:
            folder.mkdir(parents=True, exist_ok=True)
            images = data.load(split, resolution).images[:n].numpy()
            for i, im in enumerate(images):
                Image.fromarray(im).save(folder / f"{i:05d}.png")
        folders.append(folder)
    return folders[0], folders[1]


def run_t2i(a: Path, b: Path, weights: Path, device: str, batch_size: int) -> float:
    from t2i.metrics.compare import evaluate_images

    with tempfile.TemporaryDirectory() as cache:  # no cache hit from an earlier run
        opts = {"fid": {"weights": str(weights), "batch_size": batch_size, "cache_dir": cache}}
        return evaluate_images(a, b, metrics=["fid"], options=opts, device=device)["values"]["fid"]


def run_torch_fidelity(a: Path, b: Path, weights: Path, device: str, batch_size: int) -> float:
    import torch_fidelity

    out = torch_fidelity.calculate_metrics(
        input1=str(a), input2=str(b), fid=True, cuda=device.startswith("cuda"), batch_size=batch_size,
        feature_extractor_weights_path=str(weights), cache=False, verbose=False, save_cpu_ram=device == "cpu",
    )  # fmt: skip
    return out["frechet_inception_distance"]


def run_pytorch_fid(a: Path, b: Path, weights: Path, device: str, batch_size: int) -> float:
    import pytorch_fid.inception
    from pytorch_fid.fid_score import calculate_fid_given_paths

    state = torch.load(weights, map_location="cpu", weights_only=True)
    with mock.patch.object(pytorch_fid.inception, "load_state_dict_from_url", lambda *args, **kw: state):
        return float(calculate_fid_given_paths([str(a), str(b)], batch_size, device, 2048, num_workers=2))


class _TorchFidelityNet(torch.nn.Module):
    """clean-fid's custom extractor: its float [0, 255] batches -> torch-fidelity's network (uint8 in) -> pool3."""

    def __init__(self, weights: Path, device: str):
        super().__init__()
        from t2i.metrics.inception import InceptionFeatures

        self.features = InceptionFeatures(weights, device=device, features=("pool3",), batch_size=10**9)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        images = batch.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)  # exact: PNG values are integers
        return self.features(images)["pool3"]


def run_clean_fid(a: Path, b: Path, weights: Path, device: str, batch_size: int) -> float:
    from cleanfid import fid

    model = _TorchFidelityNet(weights, device)
    return float(fid.compute_fid(str(a), str(b), mode="legacy_tensorflow", custom_feat_extractor=model, batch_size=batch_size,
                                 device=torch.device(device), num_workers=0, verbose=False))  # fmt: skip


TOOLS = {
    "t2i": (run_t2i, "TF1 bilinear resize, same weights"),
    "torch-fidelity": (run_torch_fidelity, "TF1 bilinear resize, same weights"),
    "pytorch-fid": (run_pytorch_fid, "same weights; PyTorch bilinear resize (not TF1): value differs by design"),
    "clean-fid": (run_clean_fid, "legacy_tensorflow mode + torch-fidelity's network, same weights (clean mode needs its own download)"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000, help="images per folder (default 5000)")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--weights", type=Path, help="torch-fidelity's Inception weights file")
    parser.add_argument("--random-weights", action="store_true", help="write and use a RANDOM weights file (smoke run)")
    parser.add_argument("--device", default="auto", help="cpu | cuda | auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated subset of {','.join(TOOLS)}")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "t2i-metrics-bench")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in tools if t not in TOOLS]
    if unknown:
        sys.exit(f"unknown tools: {', '.join(unknown)}; known: {', '.join(TOOLS)}")
    if args.random_weights == (args.weights is not None):
        sys.exit("pass exactly one of --weights PATH and --random-weights")
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.random_weights:
        from t2i.metrics.inception import write_random_inception_weights

        weights = write_random_inception_weights(args.workdir / "RANDOM-inception-weights.pth", seed=0)
        label = "RANDOM weights (smoke run: values say nothing about image quality)"
    else:
        weights = args.weights.expanduser()
        if not weights.is_file():
            sys.exit(f"--weights {weights} is not a file")
        label = f"weights {weights.name}"
    from t2i.weights import file_sha256

    a, b = render_folders(args.workdir, args.n, args.resolution)
    print(f"FID of {args.n} Shapes test renders vs {args.n} train renders at {args.resolution}px; device {device}, "
          f"torch threads {torch.get_num_threads()}, batch {args.batch_size}; {label} (sha256 {file_sha256(weights)[:16]}...)")  # fmt: skip
    results = {}
    for tool in tools:
        fn, how = TOOLS[tool]
        start = time.perf_counter()
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # progress bars
                value = fn(a, b, weights, device, args.batch_size)
        except Exception as exc:  # report and go on: one tool failing does not void the others
            print(f"  {tool:15s} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            continue
        results[tool] = (time.perf_counter() - start, value, how)
    base = results.get("t2i")
    print("\n| tool | seconds | time / t2i's | FID | rel. diff vs t2i | how |\n|---|---|---|---|---|---|")
    for tool, (seconds, value, how) in results.items():
        ratio = f"{seconds / base[0]:.2f}x" if base else "-"
        diff = f"{abs(value - base[1]) / max(abs(base[1]), 1e-30):.1e}" if base else "-"
        print(f"| {tool} | {seconds:.1f} | {ratio} | {value:.6f} | {diff} | {how} |")
    if base:
        slower = [t for t, r in results.items() if t != "t2i" and r[0] < base[0]]
        print(f"\ntarget (t2i fastest end to end): {'met' if not slower else 'NOT met (faster: ' + ', '.join(slower) + ')'}")


if __name__ == "__main__":
    main()
