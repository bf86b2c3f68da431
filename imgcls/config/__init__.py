"""Configs: loading config files, the schema, checking values, resolving 'auto'.

files.py loads configs/*.py as main.py's --config does; schema.py is configs/default.py's every
key with its default, and completes an older W/config.json from it; check.py is the one rule
table (one line per bad value, before any work) and choices.py the valid values of the keys
that choose an implementation above this package; resolve.py resolves a run's 'auto' values
against its data and model. May import data, models and the top-level leaves (values,
parallel); never run, transfer, evaluation, training, inference or sweeps.
"""
