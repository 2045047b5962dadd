"""Inference on a trained run: the Python recommender API, offline evaluation, the HTTP service."""
