"""The embedded default: a small CNN on the scikit-learn digits (8x8 grayscale, 10 classes).

Command:  python main.py --config=configs/default.py --workdir=runs/default   (or `make train`)
Hardware: 2 CPU cores (x86-64), JAX 0.10.2 CPU backend.
Result:   0.9859 test accuracy (350/355), in 17-19 s wall for `make train` after installation
          (880 steps; dataset preparation and the report included; the device pipeline, as
          'auto' picks); seeds 0-3 give 0.9859 / 0.9915 / 0.9915 / 0.9887 (mean 0.9894).
          Measured 2026-12-06 (the device pipeline's global order), benchmarks/results.md.

The other configs import this one and change a few fields (as flax/examples/imagenet does),
so every key that any config uses exists here with its default.
"""

import ml_collections

# The dataset keys that 'auto' resolves from the data's split names (imgcls/data/splits.py).
AUTO_SPLIT_KEYS = ("train_split", "validation_split", "validation_fraction", "eval_split")


def get_config():
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.dataset = ml_collections.ConfigDict()
    config.dataset.name = "digits"  # 'digits', 'synthetic', 'folder', or any TFDS catalog name
    config.dataset.data_dir = ""  # TFDS data_dir; '' means TFDS's default (~/tensorflow_datasets)
    # The split keys may be 'auto' (as in the folder configs): found by their common names,
    # e.g. train/training_set/trn, val/dev/validation_set, test/eval (imgcls/data/splits.py).
    config.dataset.train_split = "train"
    # Evaluated during training, for the best checkpoint and early stopping; '' = eval_split.
    config.dataset.validation_split = ""
    # > 0: hold out this last fraction of train_split as the validation split. 'auto': 0.1
    # when the data has no validation split, else 0.
    config.dataset.validation_fraction = 0.0
    # The final report's split (keep it untouched); 'auto': the test split, else validation.
    config.dataset.eval_split = "test"
    # image_size, channels, mean and std may be 'auto' (as in the folder configs): resolved
    # from statistics recorded when the data was prepared (rules in imgcls/data/auto.py).
    config.dataset.image_size = 0  # resize to image_size x image_size; 0 keeps the native size
    # With image_size > 0: resize the shorter side to image_size / crop_fraction, then crop
    # the center (eval) or a random image_size square (train, without random_resized_crop).
    config.dataset.crop_fraction = 0.875
    config.dataset.shuffle_buffer_size = 2048
    config.dataset.cache = True  # cache decoded examples in memory (small datasets only)
    # 'tf': tf.data on the host. 'device': the whole train split as uint8 on the accelerators,
    # shuffled and augmented (crop, flip, erasing) in JAX; for datasets that fit in memory.
    # 'auto': 'device' when the decoded split takes at most a quarter of a device's memory and
    # every augmentation on has a JAX implementation, else 'tf' (the log says which and why).
    config.dataset.pipeline = "auto"
    # Class imbalance: 'none', 'loss' (class-weighted loss) or 'sampling' (balanced batches).
    config.dataset.balance = "none"
    config.dataset.mean = (0.5,)  # per-channel, in [0, 1] units; applied on device
    config.dataset.std = (0.5,)
    # Only read when name == 'folder': root/<split>/<class>/* or root/<class>/* (auto split).
    config.dataset.path = ""
    config.dataset.channels = 3  # images are converted to 1 (grayscale) or 3 (RGB) channels
    config.dataset.split_fractions = (0.8, 0.1, 0.1)  # train/validation/test for root/<class>/*
    config.dataset.strict = False  # fail on unreadable files (and unusable label rows)
    # A CSV/TSV mapping image files under path to labels (imgcls/data/sources/folder_labels.py):
    # 'auto' = the one *.csv/*.tsv at the top of path that names its images (class folders when
    # none does), '' = class folders only, or a file. Its columns are found by their content;
    # image_column / label_column name them ('auto': found; a header name or a column number).
    config.dataset.labels = "auto"
    config.dataset.image_column = "auto"
    config.dataset.label_column = "auto"
    # Only read when name == 'synthetic'.
    config.dataset.num_classes = 10
    config.dataset.image_shape = (32, 32, 3)
    config.dataset.num_train_examples = 1024
    config.dataset.num_eval_examples = 256

    # Training-split augmentation; every entry at its "off" value is a no-op.
    config.augment = ml_collections.ConfigDict()
    # Inception-style crop, resized to image_size (0: back to the native size).
    config.augment.random_resized_crop = False
    config.augment.area_range = (0.08, 1.0)  # ... fraction of the image area it keeps
    config.augment.random_crop_padding = 1  # pad by this many pixels, then crop back (0: off)
    config.augment.crop_padding_mode = "constant"  # zeros, or 'reflect' (the border mirrored)
    config.augment.horizontal_flip = False
    config.augment.vertical_flip = False
    config.augment.rotation = 0.0  # max degrees, uniform in [-rotation, rotation]
    config.augment.zoom = 0.0  # scale uniform in [1 - zoom, 1 + zoom]
    config.augment.translation = 0.0  # max shift, as a fraction of height and width
    config.augment.brightness = 0.0  # max delta, as a fraction of the value range
    config.augment.contrast = 0.0  # factor uniform in [1 - contrast, 1 + contrast]
    config.augment.saturation = 0.0  # factor uniform in [1 - saturation, 1 + saturation]
    config.augment.hue = 0.0  # max hue shift, in [0, 0.5] turns
    # Device pipeline only (airbench): every image mirrored in alternate epochs (a fixed random
    # half in even ones) instead of at random; cutout of a square of this size, mean-filled.
    config.augment.alternating_flip = False
    config.augment.cutout = 0
    config.augment.erasing = 0.0  # probability of erasing a random rectangle (random values)
    config.augment.mixup = 0.0  # Beta(alpha, alpha) of mixup on device; 0: off
    config.augment.cutmix = 0.0  # Beta(alpha, alpha) of cutmix; with mixup, one per batch
    # An augmentation policy after the flips (tf.data pipeline only;
    # imgcls/data/augment/autoaugment.py): 'none', 'randaugment' (N ops of magnitude M),
    # 'trivialaugment_wide' (one op, random magnitude) or 'autoaugment_imagenet' (AutoAugment's
    # ImageNet policy), as torchvision's.
    config.augment.policy = "none"
    config.augment.randaugment_num_ops = 2  # N
    config.augment.randaugment_magnitude = 9  # M, in 0-30 (torchvision's 31 bins)

    config.model = ml_collections.ConfigDict()
    config.model.name = "cnn"  # see imgcls.models.MODELS
    config.model.features = (32, 64)  # cnn; 'auto': one stage per halving to 4x4 (models/sizing)
    config.model.dense_features = 128
    config.model.dropout_rate = 0.3
    # The ResNets, WRNs and PreAct ResNets (imgcls/models) also take drop_path_rate: stochastic
    # depth, the last residual block's drop probability in training (earlier ones linearly less).
    config.half_precision = False  # bfloat16 compute, float32 parameters

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adamw"  # 'sgd', 'adamw', 'lars' or 'lamb' (large batches)
    config.optimizer.learning_rate = 3e-3  # peak learning rate
    config.optimizer.momentum = 0.9  # sgd
    config.optimizer.nesterov = True  # sgd, lars
    config.optimizer.b1 = 0.9  # adamw, lamb
    config.optimizer.b2 = 0.999  # adamw, lamb
    config.optimizer.weight_decay = 1e-4  # on kernels only (not biases or BatchNorm)
    # lars: the trust ratio's coefficient (layer-wise rate = this x |w| / |update|; kernels only).
    config.optimizer.trust_coefficient = 0.001
    # Clip the gradient to this global norm before the optimizer (0: off).
    config.optimizer.clip_norm = 0.0
    # 'cosine', 'constant' or 'plateau', after linear warmup. 'plateau' (reduce-on-plateau):
    # constant, multiplied by plateau_factor whenever the validation plateau_metric ('loss' or
    # 'accuracy') has not improved by a relative plateau_threshold for plateau_patience
    # evaluations, down to plateau_min_lr (optax.contrib.reduce_on_plateau).
    # 'linear' (the CIFAR-10 speed runs): linear warmup from warmup_start_scale x the peak,
    # then linear to end_scale x the peak at the last step.
    config.optimizer.schedule = "cosine"
    config.optimizer.warmup_epochs = 1.0
    config.optimizer.warmup_start_scale = 0.0  # schedule='linear'
    config.optimizer.end_scale = 0.0  # schedule='linear'
    # sgd: learning_rate and weight_decay in airbench's decoupled units (per 1024 examples of a
    # summed loss, independent of momentum: optim.decoupled_sgd converts them); weight decay
    # then applies to every parameter, as there.
    config.optimizer.decoupled = False
    config.optimizer.bias_lr_scale = 1.0  # sgd: BatchNorm biases' learning rate x this
    # Models with a whitening layer (airbench): train its bias for this many epochs (< 0: all).
    config.optimizer.whiten_bias_epochs = -1.0
    config.optimizer.plateau_metric = "loss"
    config.optimizer.plateau_patience = 3
    config.optimizer.plateau_factor = 0.1
    config.optimizer.plateau_threshold = 1e-4
    config.optimizer.plateau_min_lr = 0.0
    config.label_smoothing = 0.0
    # Lookahead (airbench): every lookahead_every steps the weights and BatchNorm statistics
    # become slow = d x slow + (1 - d) x weights, d = lookahead_decay^every x (step/total)^
    # lookahead_power; the last step sets the weights to slow. 0: off.
    config.lookahead_every = 0
    config.lookahead_decay = 0.95
    config.lookahead_power = 3.0
    # Models with a data-dependent initialisation (airbench's whitening): from the first this
    # many training images (eval preprocessing), when a run starts fresh.
    config.data_init_images = 5000

    # Transfer learning (imgcls/transfer/warm_start.py; README "Transfer learning").
    # Initial weights when the run starts fresh (a workdir with a checkpoint resumes instead):
    # '' (none), a training workdir 'W' (its best checkpoint, else its latest), 'W:best',
    # 'W:latest', 'W:<step>', 'keras' (Keras' ImageNet ResNet50, for resnet50_v1; downloaded
    # into Keras' cache ~/.keras/models when it is not there) or
    # 'keras:/path/to/weights.h5'. Matched by path; a head of another shape is reinitialised.
    config.init_from = ""
    # Train only the classifier `head`: the backbone's learning rate is 0 and its BatchNorm
    # uses (and keeps) its running statistics.
    config.freeze_backbone = False
    # With freeze_backbone: unfreeze after this many epochs (< 0: never; 0: never frozen, but
    # the backbone still gets its own learning rate).
    config.unfreeze_after_epochs = -1.0
    # With freeze_backbone, once unfrozen: backbone learning rate = this x the schedule's (the
    # head keeps the schedule's). Not used when freeze_backbone is False.
    config.backbone_learning_rate_scale = 0.1

    config.batch_size = 64  # global, over all devices and hosts
    # > 1: each step cuts every device's batch into this many micro-batches, run one after
    # another with their gradients averaged (memory of one micro-batch; BatchNorm statistics
    # per micro-batch).
    config.grad_accum_steps = 1
    config.eval_batch_size = 256
    config.num_epochs = 40.0
    config.num_train_steps = -1  # wins over num_epochs when > 0
    config.eval_every_epochs = 10.0
    # > 0: keep an exponential moving average (EMA) of the weights and BatchNorm statistics with
    # this decay (e.g. 0.999; imgcls/training/ema.py). Validation reports both (eval_* and
    # eval_ema_*), the best checkpoint is the better of the two, and eval/predict/export/serve
    # use the EMA unless --weights=raw.
    config.ema_decay = 0.0
    # > 0: EMA warm-up as timm's: the decay of update t is min(ema_decay, 1 - t^-power)
    # (2/3 suits runs of 1M+ steps, 3/4 shorter ones).
    config.ema_warmup_power = 0.0
    # Test-time augmentation of validation, the final report, eval and predict
    # (imgcls/evaluation/tta.py): 'none', 'flip' (mirror average) or 'flip_shift' (plus 1-pixel
    # shifts: 6 views).
    config.eval_tta = "none"
    # Stop when the validation accuracy has not improved for this many evaluations (0: off).
    config.early_stopping_patience = 0
    # A step whose loss or gradients are not finite (NaN, infinity) leaves the state unchanged.
    # 'stop': training stops there (exit status 3; the last good checkpoint stays the latest).
    # 'skip': such steps are skipped and counted (skipped_steps in metrics.jsonl); training
    # stops after max_nonfinite_steps of them in a row.
    config.on_nonfinite = "stop"
    config.max_nonfinite_steps = 10
    config.log_every_steps = 50
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 2
    # A resume checks each checkpoint against its checksums (W/checkpoints/checksums/<step>.json)
    # and falls back to the newest verified step when a step has none; True resumes from it
    # unverified (a workdir of an imgcls from before checksums existed).
    config.trust_unverified_checkpoints = False
    # A resume with a config that differs from W/config.json in more than how long and how often
    # it trains, logs and saves (imgcls/training/resume.py: RESUME_KEYS) is refused unless True;
    # the changes are recorded in W/config_changes.jsonl.
    config.allow_config_change = False
    # At the end of training, evaluate the final state and write W/eval/<split>_<step>/
    # (metrics.json, predictions.npz, report.md and figures), as `--mode=eval` does.
    config.final_report = True
    return config
