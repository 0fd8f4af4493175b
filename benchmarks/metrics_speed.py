"""FID speed, two ways: a generator's FID stage by stage at 10k and 50k images (``--generated``), or FID end to
end on the same two image folders with t2i, torch-fidelity, pytorch-fid and clean-fid (the default).

**Stages** (``--generated 10000,50000``): what an evaluation of ``fid.n_generated = N`` costs, split into
generation (the evaluator's seeded ``generate``, 250 captions per call: that batch decides the noise, so it is
fixed), feature extraction (Inception pool3) and statistics (float64 running sums, Frechet distance), each with
seconds and images/s, streaming blocks of 2,000 images as :func:`t2i.metrics.generated_rows` does. The
generator is an untrained default recipe at ``--resolution`` (``--run PATH``: a trained run's). Before the
timed runs it chooses the extraction settings that do not change values:

- batch: the fastest of ``--batch-size`` (a list; the values differ only by floating-point summation order);
- precision: ``--precision fp32,bf16`` also times bf16 autocast features, and measures FID with bf16 features
  against FID with fp32 features of the same ``--check-n`` generated images; bf16 is refused when
  ``|delta| > 1e-3`` (``--max-delta``), and the script prints the delta either way (``benchmarks/gpu_check.sh``
  runs this on CUDA).

    .venv/bin/python benchmarks/metrics_speed.py --generated 10000,50000 --device cuda --batch-size 64,128,256 \
        --precision fp32,bf16 --weights ~/.cache/torch/hub/checkpoints/weights-inception-2015-12-05-6726825d.pth
    .venv/bin/python benchmarks/metrics_speed.py --generated 200 --random-weights --device cpu   # smoke run

**Tools** (default): the built-in Shapes data, ``--n`` renders of the test split against ``--n`` of the train
split, written once as PNG folders (``--workdir``). Each tool then goes from the two folders to one FID value,
with no cache from an earlier run; the script prints seconds, the ratio to t2i and each value with its relative
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


# -- stages: a generator's FID at N images -----------------------------------------------------------
BLOCK = 2000  # images generated, then mapped, at a time (t2i.metrics.generated_rows)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _autocast(device: str, precision: str) -> contextlib.AbstractContextManager:
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.split(":")[0], dtype=torch.bfloat16)


def _extract(extractor, images: torch.Tensor, batch: int, precision: str, device: str) -> torch.Tensor:
    """pool3 of uint8 ``images``, ``batch`` at a time, float32 on the CPU."""
    with _autocast(device, precision):
        return torch.cat([extractor(images[i : i + batch])["pool3"].float().cpu() for i in range(0, len(images), batch)])


def _fid(features: torch.Tensor, batch: int, real) -> float:
    from t2i.metrics.frechet import RunningStats, frechet_distance

    stats = RunningStats()
    for i in range(0, len(features), batch):
        stats.update(features[i : i + batch])
    return frechet_distance(stats.mean, stats.cov, real.mean, real.cov)


def _setup(args: argparse.Namespace, device: str):
    """(generate factory, reference split): a trained run's generator (``--run``) or an untrained default recipe."""
    from t2i.config import merge, resolve
    from t2i.data.splits import load_split
    from t2i.engine.components import build_components, build_dataset
    from t2i.engine.evaluate import make_generate

    if args.run:
        from t2i.runs import Sampler

        sampler = Sampler.load(args.run, device=device)
        generator, encoder, cfg = sampler.generator, sampler.text_encoder, sampler.config
        dataset, _ = build_dataset(cfg)
    else:
        cfg = resolve(merge({"data": {"resolution": args.resolution,
                                      "options": {"train_size": 2000, "test_size": args.reference_n}}}, {}))
        parts = build_components(cfg)
        generator, encoder, dataset = parts.generator.to(device).eval(), parts.text_encoder.to(device), parts.dataset
    reference = load_split(dataset, cfg.eval.split, cfg.data.resolution)

    def new_generate():
        return make_generate(generator, encoder, torch.device(device), seed=0, autocast=(
            (lambda: _autocast(device, "bf16")) if args.gen_precision == "bf16" else None))

    return new_generate, reference


def run_stages(args: argparse.Namespace, weights: Path, label: str, device: str) -> int:
    from t2i.metrics import cycled_captions, generate_images
    from t2i.metrics.frechet import RunningStats
    from t2i.metrics.inception import InceptionFeatures

    sizes = [int(n) for n in args.generated.split(",")]
    batches = [int(b) for b in args.batch_size.split(",")]
    precisions = [p.strip() for p in args.precision.split(",")]
    if not set(precisions) <= {"fp32", "bf16"}:
        sys.exit(f"--precision takes fp32 and/or bf16, got {args.precision}")
    new_generate, reference = _setup(args, device)
    extractor = InceptionFeatures(weights, device=device, features=("pool3",), batch_size=max(batches))
    print(f"FID of a generator at {reference.resolution} px ({'run ' + str(args.run) if args.run else 'untrained default recipe'}); "
          f"device {device}, torch threads {torch.get_num_threads()}; generation {args.gen_precision}, 250 captions per call; "
          f"{label}")  # fmt: skip

    # the reference: pool3 statistics of the test split (cached in practice: timed apart)
    start = time.perf_counter()
    real_features = _extract(extractor, reference.images, batches[0], "fp32", device)
    real = RunningStats().update(real_features)
    print(f"reference: {len(reference)} images in {time.perf_counter() - start:.1f} s (computed once and cached by t2i)")

    # choose the batch and the precision on a sample of generated images
    sample = generate_images(new_generate(), cycled_captions(reference, args.check_n, 0), reference.resolution)
    timed: dict[tuple[str, int], float] = {}
    for precision in precisions:
        for batch in batches:
            _extract(extractor, sample[: 2 * batch], batch, precision, device)  # warm-up (cuDNN's choice of kernels)
            _sync(device)
            start = time.perf_counter()
            _extract(extractor, sample, batch, precision, device)
            _sync(device)
            timed[precision, batch] = len(sample) / (time.perf_counter() - start)
            print(f"  extraction {precision:4s} batch {batch:4d}: {timed[precision, batch]:8.1f} images/s")
    allowed = ["fp32"]
    if "bf16" in precisions:
        best = max(batches, key=lambda b: timed["bf16", b])
        fid32 = _fid(_extract(extractor, sample, best, "fp32", device), best, real)
        fid16 = _fid(_extract(extractor, sample, best, "bf16", device), best, real)
        delta = fid16 - fid32
        verdict = "allowed" if abs(delta) <= args.max_delta else "REFUSED"
        print(f"bf16 features: FID {fid16:.6f} vs fp32 {fid32:.6f} on the same {len(sample)} images: "
              f"delta {delta:+.2e} (limit {args.max_delta:.0e}): bf16 {verdict}")
        if verdict == "allowed":
            allowed.append("bf16")
    precision, batch = max(((p, b) for p in allowed for b in batches if (p, b) in timed), key=lambda pb: timed[pb])
    print(f"chosen for extraction: {precision}, batch {batch}")

    print("\n| images | generation s | img/s | extraction s | img/s | statistics s | total s | FID |\n|---|---|---|---|---|---|---|---|")
    for n in sizes:
        generate = new_generate()
        captions = cycled_captions(reference, n, 0)
        t_gen = t_feat = 0.0
        parts = []
        for s in range(0, n, BLOCK):
            start = time.perf_counter()
            images = generate_images(generate, captions[s : s + BLOCK], reference.resolution)
            _sync(device)
            t_gen += time.perf_counter() - start
            start = time.perf_counter()
            parts.append(_extract(extractor, images, batch, precision, device))
            _sync(device)
            t_feat += time.perf_counter() - start
        start = time.perf_counter()
        value = _fid(torch.cat(parts), batch, real)
        t_stats = time.perf_counter() - start
        total = t_gen + t_feat + t_stats
        print(f"| {n:,} | {t_gen:.1f} | {n / t_gen:.0f} | {t_feat:.1f} | {n / t_feat:.0f} | {t_stats:.2f} | {total:.1f} | {value:.4f} |")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generated", default="", help="stages mode: generated image counts, e.g. 10000,50000")
    parser.add_argument("--run", type=Path, help="stages mode: a trained run folder (default: an untrained default recipe)")
    parser.add_argument("--precision", default="fp32", help="stages mode: extraction precisions to try: fp32,bf16")
    parser.add_argument("--gen-precision", default="fp32", choices=["fp32", "bf16"], help="stages mode: generator autocast")
    parser.add_argument("--check-n", type=int, default=2000, help="stages mode: images for the batch/precision choice")
    parser.add_argument("--max-delta", type=float, default=1e-3, help="stages mode: largest |FID(bf16) - FID(fp32)| allowed")
    parser.add_argument("--reference-n", type=int, default=5000, help="stages mode: test split size (reference images)")
    parser.add_argument("--n", type=int, default=5000, help="tools mode: images per folder (default 5000)")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--weights", type=Path, help="torch-fidelity's Inception weights file")
    parser.add_argument("--random-weights", action="store_true", help="write and use a RANDOM weights file (smoke run)")
    parser.add_argument("--device", default="auto", help="cpu | cuda | auto")
    parser.add_argument("--batch-size", default="64", help="images per Inception pass (stages mode: a list to choose from)")
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

    if args.generated:
        sys.exit(run_stages(args, weights, f"{label} (sha256 {file_sha256(weights)[:16]}...)", device))
    args.batch_size = int(args.batch_size.split(",")[0])
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
