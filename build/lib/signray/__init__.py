"""signray: distributed hyperparameter search and training for isolated sign-language recognition.

Data flows one way, one package per step::

    signray.data      files -> validated, packed splits -> batches
    signray.models    the model registry (transformer, iv3_gru)
    signray.training  the one training loop, its checkpoints and reporters (no Ray)
    signray.analysis  evaluation, experiment reading, plots, the HTML report (no Ray)
    signray.tuning    Ray Tune / Ray Train: the only package that imports Ray

``signray.config`` turns flags and YAML into typed configs; ``signray.train``, ``.tune``,
``.evaluate``, ``.predict`` and ``.report`` are the commands.
"""

__version__ = "0.2.0"
