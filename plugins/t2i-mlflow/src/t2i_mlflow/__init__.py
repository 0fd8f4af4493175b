"""MLflow for t2i: the logger ``mlflow`` (``t2i run --logger mlflow``). See :mod:`t2i_mlflow.logger`.

Loading the plugin (``t2i --help``, ``t2i list``) does not import MLflow: the logger is named by reference.
"""
