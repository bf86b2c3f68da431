"""Transfer learning: a run's first weights from another run or from a pretrained file.

warm_start.py (config.init_from: a workdir's checkpoint or Keras' weights, matched by path,
the head re-initialised when its shape differs), keras_import.py (Keras' ResNet50 weights file
onto resnet50_v1), keras_weights.py (downloading and caching Keras' weight files). Freezing the
backbone is the optimizer's (imgcls.training.optim). May import run, config, data, models and
the top-level leaves; never evaluation, training, inference or sweeps.
"""
