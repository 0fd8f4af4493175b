"""Weights & Biases for t2i: the logger ``wandb`` (``t2i run --logger wandb``). See :mod:`t2i_wandb.logger`.

Loading the plugin (``t2i --help``, ``t2i list``) does not import wandb: the logger is named by reference.
"""
