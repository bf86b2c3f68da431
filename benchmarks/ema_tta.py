"""Does a moving average of the weights (EMA) or test-time augmentation (TTA) help a config?

Trains the config once per seed with config.ema_decay set (the EMA does not change training:
the trained weights are those of the run without it), then evaluates the final checkpoint's
trained and averaged weights with each TTA mode on the eval split, and prints a table of
accuracies (mean over seeds, and each seed's).

    python benchmarks/ema_tta.py --config=configs/default.py --seeds 0 1 2 3 --ema_decay 0.99
    python benchmarks/ema_tta.py --config=configs/folder_cnn.py --seeds 0 \\
        --set dataset.path=/data/flowers --set dataset.data_dir=/tmp/tfds_flowers
"""

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import imgcls  # noqa: E402
from imgcls.config import files as config_files  # noqa: E402
from imgcls.evaluation import evaluate, tta  # noqa: E402

WEIGHTS = ("raw", "ema")


def run(config_path, seeds, ema_decay, warmup_power, assignments, root) -> dict:
    """{(weights, tta): [accuracy per seed]} of the final checkpoints."""
    accuracies = {(w, m): [] for w in WEIGHTS for m in tta.MODES}
    for seed in seeds:
        config = config_files.load(config_path)
        for assignment in assignments:
            config_files.set_value(config, assignment)
        config.seed = seed
        config.ema_decay = ema_decay
        config.ema_warmup_power = warmup_power
        config.final_report = False
        workdir = os.path.join(root, f"seed{seed}")
        imgcls.train_and_evaluate(config, workdir)
        for weights, mode in accuracies:
            result = evaluate.evaluate_checkpoint(workdir, "latest", weights=weights, tta=mode)
            accuracies[weights, mode].append(result["accuracy"])
    return accuracies


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.py")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--ema_decay", type=float, default=0.99)
    parser.add_argument("--ema_warmup_power", type=float, default=0.0)
    parser.add_argument("--set", action="append", default=[], help="config key=value")
    parser.add_argument("--workdir", default=None, help="default: a temporary directory")
    args = parser.parse_args()
    root = args.workdir or tempfile.mkdtemp(prefix="ema_tta_")
    accuracies = run(args.config, args.seeds, args.ema_decay, args.ema_warmup_power, args.set, root)
    print(f"{args.config}, ema_decay={args.ema_decay}, warmup power {args.ema_warmup_power}")
    print(f"final checkpoint, eval split; seeds {args.seeds}; workdirs in {root}")
    print("| weights | TTA | mean accuracy | per seed |")
    print("|---|---|---|---|")
    for (weights, mode), values in accuracies.items():
        per_seed = " / ".join(f"{v:.4f}" for v in values)
        print(f"| {weights} | {mode} | {sum(values) / len(values):.4f} | {per_seed} |")


if __name__ == "__main__":
    main()
