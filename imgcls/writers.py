"""Metric writers: TensorBoard + console (CLU) and `W/metrics.jsonl` for scripts and reports.

Importing this module imports TensorFlow (CLU's summary writer), so training imports it
only inside `train_and_evaluate`.
"""

import json
import os

import jax
from clu import metric_writers

from imgcls import workdir as workdir_files


class JsonlWriter(metric_writers.MetricWriter):
    """Appends every scalar write as one JSON object per line: {"step": s, "name": v, ...}."""

    def __init__(self, path: str, keep_until_step: int | None = None):
        self.path = path
        if keep_until_step is not None and os.path.exists(path):
            self._truncate(keep_until_step)
        self._file = open(path, "a")

    def _truncate(self, last_step: int) -> None:
        """On resume, drops lines logged after the checkpoint, which are about to be redone."""
        with open(self.path) as f:
            lines = [line for line in f if line.strip()]
        kept = [line for line in lines if json.loads(line)["step"] <= last_step]
        with open(self.path, "w") as f:
            f.writelines(kept)

    def write_scalars(self, step, scalars):
        row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def write_summaries(self, step, values, metadata=None):
        pass

    def write_images(self, step, images):
        pass

    def write_videos(self, step, videos):
        pass

    def write_audios(self, step, audios, *, sample_rate):
        pass

    def write_texts(self, step, texts):
        pass

    def write_histograms(self, step, arrays, num_buckets=None):
        pass

    def write_hparams(self, hparams):
        pass

    def flush(self):
        self._file.flush()

    def close(self):
        self._file.close()


def create_writer(workdir: str, resume_step: int | None = None) -> metric_writers.MetricWriter:
    """Process 0 writes TensorBoard events, the console log and metrics.jsonl; others log only."""
    if jax.process_index() > 0:
        return metric_writers.create_default_writer(just_logging=True, asynchronous=False)
    return metric_writers.MultiWriter(
        [
            metric_writers.create_default_writer(workdir, asynchronous=False),
            JsonlWriter(
                os.path.join(workdir, workdir_files.METRICS_FILE), keep_until_step=resume_step
            ),
        ]
    )
