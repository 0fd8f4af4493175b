"""``t2i demo SOURCE``: load the model and read its run (a bad source is one line and exit 2, before any
server starts), check the port is free, then serve the page until Ctrl-C."""

from __future__ import annotations

import errno
import socket
from typing import Annotated

import typer

from t2i.errors import UsageError

__all__ = ["demo_cmd", "check_port"]


def check_port(host: str, port: int) -> None:
    """Refuse a port out of range, or one already taken on ``host``, in one line."""
    if not 1 <= port <= 65535:
        raise UsageError(f"--port must be in 1..65535, got {port}")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UsageError(f"port {port} on {host} is in use (another demo?); pick another with --port") from None
            raise UsageError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None


def demo_cmd(
    source: Annotated[str, typer.Argument(help="a run folder, a checkpoints/step_* folder, an exported model folder, or hf://ORG/NAME (HF_HUB_OFFLINE=1: from the HF cache only)")],
    host: Annotated[str, typer.Option("--host", help="address to serve on; 0.0.0.0 opens it to your network")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="port to serve on")] = 7860,
    device: Annotated[str, typer.Option("--device", help="cpu (default: small models draw fast enough), auto, cuda, mps")] = "cpu",
    share: Annotated[bool, typer.Option("--share/--no-share", help="also a temporary public gradio.live link (needs the internet)")] = False,
) -> None:
    """A local web page for a trained model: generate images from a caption (Generate tab) and look
    through its run: loss curves, sample grids over steps, evaluation, health verdicts (Run tab)."""
    from .app import build_demo, launch_demo, load_sampler

    check_port(host, port)
    demo = build_demo(load_sampler(source, device=device))
    print(f"t2i demo: serving {source} at http://{host}:{port} (Ctrl-C stops it)")
    launch_demo(demo, host=host, port=port, share=share, block=True, quiet=True)
