"""A run's files in its workdir W: what training writes and every other mode reads.

workdir.py: W/config.json, dataset_info.json, metrics.jsonl and the training accumulator;
checkpointing.py: Orbax checkpoints with their checksums, the best by validation accuracy;
writers.py: TensorBoard, console and metrics.jsonl writers (CLU); files.py: atomic writes and
JSON without NaN; restore.py: a checkpoint's variables for eval, predict, export and serve.
May import config, data, models and the top-level leaves; never transfer, evaluation,
training, inference or sweeps.
"""
