"""Evaluation: the eval step, checkpoint reports and what they show.

step.py (the data-parallel eval step, evaluation during training), evaluate.py
(`evaluate_checkpoint(W)` and the report under W/eval/), metrics.py (CLU collections),
report.py (figures and report.md), tta.py (test-time augmentation), grad_cam.py (Grad-CAM and
its figure), inspection.py (--mode=inspect: a dataset before training). May import run,
config, data, models and the top-level leaves; never transfer, training, inference or sweeps.
"""
