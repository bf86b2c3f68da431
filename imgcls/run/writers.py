"""Metric writers: TensorBoard + console (CLU) and `W/metrics.jsonl` for scripts and reports.

Importing this module imports TensorFlow (CLU's summary writer), so training imports it
only inside `train_and_evaluate`.
"""

import os

import jax
from clu import metric_writers

from imgcls.run import files
from imgcls.run import workdir as workdir_files


class JsonlWriter(metric_writers.MetricWriter):
    """Appends every scalar write as one JSON object per line: {"step": s, "name": v, ...}.

    Each line is written whole and flushed; non-finite values are written as null. A line cut
    short (a kill, a full disk) is dropped on resume, as readers (workdir.read_metrics) skip it.
    """

    def __init__(self, path: str, keep_until_step: int | None = None):
        self.path = path
        if keep_until_step is not None and os.path.exists(path):
            self._truncate(keep_until_step)
        try:
            self._file = open(path, "a")
        except OSError as e:
            raise files.WriteError.of(e, path) from e

    def _truncate(self, last_step: int) -> None:
        """On resume, drops lines logged after the checkpoint, which are about to be redone."""
        kept = [row for row in workdir_files.read_metrics(self.path) if row["step"] <= last_step]
        with files.atomic_open(self.path) as f:
            f.writelines(files.json_text(row) + "\n" for row in kept)

    def write_scalars(self, step, scalars):
        row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        try:
            self._file.write(files.json_text(row) + "\n")
            self._file.flush()
        except OSError as e:
            raise files.WriteError.of(e, self.path) from e

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
