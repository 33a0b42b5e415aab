"""Feast feature repository of Flywheel (declarative definitions in ``definitions.py``).

Importing this package loads nothing; ``flywheel.feature_store`` imports the definitions
when it needs them, and the ``feast`` CLI reads them from this folder.
"""
