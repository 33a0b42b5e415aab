"""Kubeflow pipelines: wiring only (see ``continuous_training.py``)."""
