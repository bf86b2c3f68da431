"""ResNet-50 on synthetic 224x224 images: measures training throughput, not accuracy.

Command:  python main.py --config=configs/synthetic_benchmark.py --workdir=runs/synthetic
          (benchmarks/train_throughput.py times the step alone, without the input pipeline)
Hardware: one NVIDIA H200 (step alone, benchmarks/train_throughput.py): 6,819 images/s in
          bfloat16 at batch 256 (3,813 in float32); 2 CPU cores: 2 images/s (float32, batch 16).
Result:   no accuracy to reach (labels are synthetic); the end-to-end main.py run of this
          config, input pipeline included, is not yet measured.
"""

from configs import default


def get_config():
    config = default.get_config()
    config.dataset.name = "synthetic"
    config.dataset.num_classes = 1000
    config.dataset.image_shape = (224, 224, 3)
    config.dataset.num_train_examples = 4096
    config.dataset.num_eval_examples = 512
    config.dataset.shuffle_buffer_size = 1024
    config.dataset.mean = (0.5, 0.5, 0.5)
    config.dataset.std = (0.25, 0.25, 0.25)

    config.model = default.ml_collections.ConfigDict()
    config.model.name = "resnet50"
    config.half_precision = True

    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.1
    config.batch_size = 256
    config.eval_batch_size = 256
    config.num_train_steps = 100
    config.eval_every_epochs = 1000.0  # evaluate at the end only
    config.log_every_steps = 20
    return config
