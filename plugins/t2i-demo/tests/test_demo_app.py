"""t2i-demo without a browser: what the Run tab reads from a run folder and from an export, the page each
builds, the Generate callback (count, size, seeds as ``t2i sample`` draws them, truncation only where the
generator has it), and bad input as one line with exit code 2 before any server starts."""

from __future__ import annotations

import dataclasses
import json
import socket

import numpy as np
import pytest
import torch

from t2i.cli import main
from t2i.errors import UsageError
from t2i_demo import MAX_IMAGES, DemoModel, build_demo, load_sampler, read_run_view
from t2i_demo.run_view import MAX_GRIDS

CAPTION = "a small red circle in the center on a black background"


def components(demo) -> dict[str, dict]:
    """The page's components by elem_id: their type and props (what the browser is sent)."""
    return {c["props"]["elem_id"]: {**c["props"], "kind": c["type"]}
            for c in demo.config["components"] if c.get("props", {}).get("elem_id")}


def error_line(capsys) -> str:
    lines = [x for x in capsys.readouterr().err.strip().splitlines() if x.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_the_run_view_reads_losses_grids_evaluation_and_verdicts(run):
    view = read_run_view(run / "checkpoints" / "step_00000004", run)
    assert view.kind == "run" and view.folder == run
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = {(r["step"], k) for r in records for k in r if k.startswith(("d/", "g/"))}
    assert set(zip(view.losses["step"], view.losses["series"])) == logged and "d/total" in view.losses["series"]
    assert [label for _, label in view.grids] == ["step 2", "step 4"]
    values = json.loads((run / "eval.json").read_text())["values"]
    assert [row[0] for row in view.eval_rows] == sorted(values) and "step 4" in view.eval_title
    assert view.health and view.health[0].startswith("- [")  # the tiny run collapses: a verdict, not "no problems"
    assert view.notes.startswith("# Run")  # summary.md


def test_the_grids_over_steps_are_thinned_evenly_keeping_first_and_last(tmp_path):
    (tmp_path / "samples").mkdir(parents=True)
    (tmp_path / "config.toml").write_text("")
    for step in range(1, 101):
        (tmp_path / "samples" / f"step_{step:08d}.png").write_bytes(b"")
    (tmp_path / "samples" / "latest.png").write_bytes(b"")
    labels = [label for _, label in read_run_view(tmp_path / "checkpoints" / "x", tmp_path).grids]
    assert len(labels) == MAX_GRIDS and labels[0] == "step 1" and labels[-1] == "step 100"
    assert len(set(labels)) == MAX_GRIDS


def test_build_demo_on_a_run_folder_has_both_tabs_with_the_run_history(run):
    page = components(build_demo(run))
    for name in ("caption", "count", "seed", "generate", "images", "losses", "grids", "evaluation", "health", "notes"):
        assert name in page, name
    assert page["count"]["maximum"] == MAX_IMAGES
    assert page["losses"]["kind"] == "nativeplot" and page["evaluation"]["kind"] == "dataframe"
    assert [g["caption"] for g in page["grids"]["value"]] == ["step 2", "step 4"]
    assert not page["truncate"]["visible"] and not page["truncation"]["visible"]  # dcgan has no truncation trick
    assert "no-history" not in page


def test_build_demo_on_an_export_shows_its_card_and_says_there_is_no_history(exported):
    page = components(build_demo(exported))
    assert "losses" not in page and "no loss history" in page["no-history"]["value"].lower()
    assert [g["caption"] for g in page["grids"]["value"]] == ["step 4"]  # its samples.png
    assert page["evaluation"]["kind"] == "dataframe" and "mode_collapse" in page["health"]["value"]
    card = page["notes"]["value"]
    assert card.startswith("# ") and "license:" not in card and "](samples.png)" not in card  # no front matter


def test_generate_returns_n_images_of_the_resolution_drawn_as_t2i_sample_draws_them(run):
    sampler = load_sampler(run)
    model = DemoModel(sampler)
    images = model.generate(CAPTION, 3, seed=5)
    assert [(im.mode, im.size) for im in images] == [("RGB", (32, 32))] * 3
    again = model.generate(CAPTION, 1, seed=6)[0]  # image j uses seed + j
    assert again.tobytes() == images[1].tobytes()
    from t2i.engine.grid import to_uint8

    drawn = to_uint8(sampler.generate([CAPTION], 3, 5))
    assert all(torch.equal(torch.from_numpy(np.array(im)), d) for im, d in zip(images, drawn))


@pytest.mark.parametrize("request_, message", [
    (dict(caption="  "), "type a caption"),
    (dict(n=0), "between 1 and"),
    (dict(n=MAX_IMAGES + 1), "between 1 and"),
    (dict(seed=-1), "seed must be >= 0"),
    (dict(truncation=0.5), "no truncation trick"),
], ids=["empty", "zero", "too-many", "negative-seed", "truncation"])
def test_generate_refuses_bad_requests_in_one_line(run, request_, message):
    model = DemoModel(load_sampler(run))
    with pytest.raises(UsageError, match=message):
        model.generate(**{"caption": CAPTION, "n": 2, "seed": 0, **request_})


class Truncating(torch.nn.Module):
    """A generator with a truncation trick: the wrapped one on noise scaled by psi."""

    supports_truncation = True

    def __init__(self, generator):
        super().__init__()
        self.inner, self.z_dim, self.resolution = generator, generator.z_dim, generator.resolution

    def forward(self, z, text, truncation=None):
        return self.inner(z * (1.0 if truncation is None else truncation), text)


def test_truncation_is_offered_and_used_only_for_a_generator_that_has_it(run):
    plain = load_sampler(run)
    sampler = dataclasses.replace(plain, generator=Truncating(plain.generator).eval())
    page = components(build_demo(sampler))
    assert page["truncate"]["visible"] and page["truncation"]["visible"] and page["truncation"]["interactive"]
    model = DemoModel(sampler)
    assert model.supports_truncation and not DemoModel(plain).supports_truncation
    off, on = model.generate(CAPTION, 2, 0), model.generate(CAPTION, 2, 0, truncation=0.1)
    assert [a.tobytes() for a in off] == [b.tobytes() for b in DemoModel(plain).generate(CAPTION, 2, 0)]
    assert off[0].tobytes() != on[0].tobytes()


def test_bad_sources_are_one_line_and_exit_2_before_any_server(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("t2i_demo.app.launch_demo", lambda *a, **k: pytest.fail("a server was started"))
    assert main(["demo", str(tmp_path / "missing")]) == 2
    assert error_line(capsys).endswith("does not exist; pass a run folder (runs/<name>), one of its checkpoints/step_* "
                                       "folders or an exported model folder")
    assert main(["demo", str(tmp_path)]) == 2
    assert "neither a t2i run folder with checkpoints nor a checkpoint folder" in error_line(capsys)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    assert main(["demo", "hf://org/unknown"]) == 2
    assert "is not in the Hugging Face cache and HF_HUB_OFFLINE is set" in error_line(capsys)


def test_a_port_in_use_is_refused_in_one_line(run, monkeypatch, capsys):
    monkeypatch.setattr("t2i_demo.app.launch_demo", lambda *a, **k: pytest.fail("a server was started"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["demo", str(run), "--port", str(port)]) == 2
    assert error_line(capsys) == f"t2i: error: port {port} on 127.0.0.1 is in use (another demo?); pick another with --port"
    assert main(["demo", str(run), "--port", "70000"]) == 2
    assert "--port must be in 1..65535" in error_line(capsys)


def test_the_command_builds_the_page_and_serves_it_where_asked(run, monkeypatch, capsys):
    served = {}
    monkeypatch.setattr("t2i_demo.app.launch_demo", lambda demo, **kw: served.update(demo=demo, **kw))
    with socket.socket() as probe:  # a port free now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["demo", str(run), "--port", str(port)]) == 0
    assert {k: served[k] for k in ("host", "port", "share", "block")} == {
        "host": "127.0.0.1", "port": port, "share": False, "block": True}
    assert "images" in components(served["demo"])
    assert f"at http://127.0.0.1:{port}" in capsys.readouterr().out
