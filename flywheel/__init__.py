"""Flywheel: a continuous-training ML platform (event lake, Feast, KFP, Ray, BentoML).

Nothing runs at import: stages live in their own modules and import their engines lazily.
"""

__version__ = "0.1.0"
