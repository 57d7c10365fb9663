"""Ray: the only package that imports it. Cluster start-up, the Ray Train launcher for DDP runs,
the Tune trial, searcher and schedulers, experiment tracking and the search's outputs.

Modules import Ray at their top, except those that run before Ray starts: `signray.tuning.plan`
(validates a search), `signray.tuning.address` and `signray.tuning.auth` (choose the cluster and
check that it accepts us, setting what Ray reads when it is imported). Nothing is imported here,
so importing those starts no Ray.
"""
