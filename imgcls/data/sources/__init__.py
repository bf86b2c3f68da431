"""Data sources: one interface (base.Source), a registry by config.dataset.name (registry.py).

catalog.py (any TFDS catalog dataset), digits.py (scikit-learn's digits, bundled), synthetic.py,
folder.py (your own image folder, prepared once into a TFDS dataset) with folder_scan.py (its
layout and split, TF-free) and image_stats.py (the statistics 'auto' values come from). Importing
this package imports nothing: the sources that read data import TensorFlow (through
imgcls.data._tf) when they are imported.
"""
