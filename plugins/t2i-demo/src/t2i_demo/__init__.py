"""t2i demo: a local Gradio page for a trained t2i model (``t2i demo SOURCE``).

The names below are imported on first use, so loading the plugin (``t2i --help``) does not import Gradio.
"""

from t2i.lazy import lazy_exports

# name -> the submodule that defines it
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "build_demo": "app",
    "launch_demo": "app",
    "load_sampler": "app",
    "DemoModel": "app",
    "MAX_IMAGES": "app",
    "RunView": "run_view",
    "read_run_view": "run_view",
})
