"""The BentoML face of the ranking service (``bentoml serve serving.service:Ranker``)."""
