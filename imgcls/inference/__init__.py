"""Inference from a trained workdir: predict, export, serve.

predict.py (a Predictor of W: --mode=predict), export.py (a SavedModel and a jax.export
artifact: --mode=export), serve.py and serve_page.html (a web page and JSON API: --mode=serve).
They read W through run/ and models/ (never the training loop), and may import evaluation
(TTA), config, data and the top-level leaves; never training, transfer or sweeps.
"""
