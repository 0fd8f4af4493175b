"""The demo page: :func:`build_demo` turns a trained model into a Gradio ``Blocks`` app with two tabs.

- **Generate**: a caption, how many images, a seed and (only for a generator that declares
  ``supports_truncation``) a truncation switch and psi; the images appear in a gallery, each labelled with
  its seed, so ``t2i sample SOURCE CAPTION -n 1 --seed S`` draws it again.
- **Run**: the loss curves (``metrics.jsonl``), the sample grids over steps, the evaluation table and the
  health verdicts, then the run's summary; for an exported model, what the export keeps (last grid,
  evaluation, verdicts, model card) and a line saying there is no loss history.

The page is local: analytics are off (``GRADIO_ANALYTICS_ENABLED=False`` unless set otherwise), Gradio's
default theme serves its own fonts, and the browser fetches nothing from anywhere else (the browser test
checks every resource the page loaded).

    from t2i_demo import build_demo, launch_demo
    launch_demo(build_demo("runs/my-run"), port=7860)
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: it reads it then

from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

from t2i.errors import UsageError  # noqa: E402
from t2i.runs import Sampler  # noqa: E402

from .run_view import RunView, read_run_view  # noqa: E402

__all__ = ["DemoModel", "build_demo", "launch_demo", "load_sampler", "MAX_IMAGES"]

MAX_IMAGES = 16  # the number-of-images slider's top: a CPU draws that many small images in about a second
HUB_SCHEME = "hf://"
# shown without rescaling blur: GAN samples are small (32-64 px) and the browser would smear them
_CSS = "#images img { image-rendering: pixelated; }"


def load_sampler(source: str | Path, *, device: str = "cpu") -> Sampler:
    """A run folder, a ``checkpoints/step_*`` folder, an exported model folder or ``hf://ORG/NAME`` (the
    Hugging Face Hub; from its cache only with ``HF_HUB_OFFLINE=1``), as :class:`t2i.runs.Sampler`. Bad
    sources are a one-line :class:`t2i.errors.UsageError`, before any server starts."""
    if str(source).startswith(HUB_SCHEME):
        return Sampler.from_pretrained(str(source), device=device)
    return Sampler.load(Path(source), device=device)


class DemoModel:
    """The Generate tab's callback, without Gradio: a caption in, ``n`` PIL images out."""

    def __init__(self, sampler: Sampler):
        self.sampler = sampler

    @property
    def supports_truncation(self) -> bool:
        """Whether the generator declares a truncation trick (the page then shows its controls)."""
        return bool(getattr(self.sampler.generator, "supports_truncation", False))

    @property
    def resolution(self) -> int:
        return int(self.sampler.config.data.resolution)

    def generate(self, caption: str, n: int = 4, seed: int = 0, truncation: float | None = None) -> list[Image.Image]:
        """``n`` images (RGB, ``resolution`` px) of ``caption``; image ``j`` from the noise of seed ``seed + j``,
        as ``t2i sample`` draws it. Truncation is refused for a generator without the trick."""
        from t2i.engine.grid import to_uint8

        caption = (caption or "").strip()
        if not caption:
            raise UsageError("type a caption first")
        if not 1 <= int(n) <= MAX_IMAGES:
            raise UsageError(f"number of images must be between 1 and {MAX_IMAGES}, got {n}")
        if int(seed) < 0:
            raise UsageError(f"seed must be >= 0, got {seed}")
        images = self.sampler.generate([caption], int(n), int(seed), truncation=truncation)
        return [Image.fromarray(pixels.numpy()) for pixels in to_uint8(images)]

    def describe(self) -> str:
        """One Markdown line: the components, resolution, step and weights of the model shown."""
        cfg, s = self.sampler.config, self.sampler
        name = s.checkpoint.name
        step = int(name[5:]) if name.startswith("step_") and name[5:].isdigit() else None
        where = f"step {step} of run `{s.run_dir}`" if s.run_dir is not None and step is not None else f"`{s.checkpoint}`"
        return (f"Generator `{cfg.generator.name}`, text encoder `{cfg.text_encoder.name}`, "
                f"{cfg.data.resolution} px, {where}, weights `{s.weights}`, device `{s.device}`.")


def build_demo(source: str | Path | Sampler, *, device: str = "cpu") -> gr.Blocks:
    """The demo app for ``source`` (what :func:`load_sampler` takes, or a loaded Sampler); not launched."""
    sampler = source if isinstance(source, Sampler) else load_sampler(source, device=device)
    model = DemoModel(sampler)
    view = read_run_view(sampler.checkpoint, sampler.run_dir)
    with gr.Blocks(title="t2i demo") as demo:
        gr.Markdown(f"# t2i demo\n{model.describe()}")
        with gr.Tabs():
            with gr.Tab("Generate", id="generate"):
                _generate_tab(model)
            with gr.Tab("Run", id="run"):
                _run_tab(view)
    return demo


def _generate_tab(model: DemoModel) -> None:
    truncatable = model.supports_truncation
    with gr.Row():
        with gr.Column(scale=1):
            caption = gr.Textbox(label="Caption", placeholder="a small red circle in the center on a black background",
                                 lines=2, elem_id="caption")
            count = gr.Slider(1, MAX_IMAGES, value=4, step=1, label="Number of images", elem_id="count")
            seed = gr.Number(value=0, precision=0, minimum=0, label="Seed (image j uses seed + j)", elem_id="seed")
            # the generator's own trick, so shown only when it has one ("None" when off: its default noise)
            truncate = gr.Checkbox(value=False, label="Truncate the noise", visible=truncatable, elem_id="truncate")
            psi = gr.Slider(0.05, 1.0, value=0.7, step=0.05, label="Truncation psi (smaller: more typical, less varied)",
                            visible=truncatable, interactive=truncatable, elem_id="truncation")
            button = gr.Button("Generate", variant="primary", elem_id="generate")
        with gr.Column(scale=2):
            gallery = gr.Gallery(label="Images", columns=4, format="png", object_fit="contain", height="auto",
                                 elem_id="images")

    def on_generate(text: str, n: float, s: float | None, on: bool, value: float) -> list[tuple[Image.Image, str]]:
        start = int(s or 0)
        try:
            images = model.generate(text, int(n), start, float(value) if truncatable and on else None)
        except UsageError as exc:
            raise gr.Error(str(exc)) from None
        return [(image, f"seed {start + j}") for j, image in enumerate(images)]

    inputs = [caption, count, seed, truncate, psi]
    button.click(on_generate, inputs, gallery, api_name="generate")
    caption.submit(on_generate, inputs, gallery, api_name=False)


def _run_tab(view: RunView) -> None:
    if view.kind == "none":
        gr.Markdown("No run history: this checkpoint folder is not inside a run folder and is not an export.",
                    elem_id="no-history")
        return
    if view.has_losses:
        import pandas as pd

        gr.LinePlot(pd.DataFrame(view.losses), x="step", y="value", color="series", label="Losses and logits (metrics.jsonl)",
                    elem_id="losses")
    else:
        gr.Markdown("No loss history: an exported model keeps its last evaluation, grid and verdicts, not its "
                    "training curves.", elem_id="no-history")
    if view.grids:
        gr.Gallery([(str(p), label) for p, label in view.grids], label="Sample grids over steps (fixed noise x fixed captions)",
                   columns=4, format="png", object_fit="contain", height=520, selected_index=len(view.grids) - 1,
                   elem_id="grids")
    if view.eval_rows:
        gr.Dataframe(view.eval_rows, headers=["metric", "value"], label=view.eval_title, interactive=False,
                     elem_id="evaluation")
    else:
        gr.Markdown("No evaluation recorded (eval.metrics was empty).", elem_id="evaluation")
    if view.health:
        gr.Markdown("### Training health\n" + "\n".join(view.health), elem_id="health")
    if view.notes:
        title = "Run summary (summary.md)" if view.kind == "run" else "Model card (README.md)"
        with gr.Accordion(title, open=view.kind == "export"):
            gr.Markdown(view.notes, elem_id="notes")


def launch_demo(demo: gr.Blocks, *, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
                block: bool = True, quiet: bool = False) -> str:
    """Serve ``demo`` at ``http://host:port`` and return that address; with ``block`` (the command) until
    Ctrl-C, else in a background thread (tests; ``demo.close()`` stops it). ``share`` asks Gradio for a public
    link (it needs the internet)."""
    # Gradio's default theme serves its fonts itself (no web font); no server-side rendering (no Node.js)
    _, url, _ = demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block,
                            quiet=quiet, css=_CSS, ssr_mode=False, footer_links=[], show_error=True)
    return url
