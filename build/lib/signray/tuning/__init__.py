"""Ray: the only package that imports it. Cluster start-up, the Ray Train launcher for DDP runs,
the Tune trial, searcher and schedulers, experiment tracking and the search's outputs.

Modules import Ray at their top, except `signray.tuning.plan`, which validates a search before
Ray starts; nothing is imported here, so importing the plan starts no Ray.
"""
