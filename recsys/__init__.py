"""recsys: a music recommender engine with an explainability app."""

__version__ = "0.1.0"
