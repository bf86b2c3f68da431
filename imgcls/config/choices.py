"""The valid values of config keys that choose among implementations in training and evaluation.

Each list is defined once, here, below the packages that implement the choices: the rule table
(imgcls.config.check) validates a config with it before any work, and the implementations
(imgcls.training.optim, imgcls.training.schedules, imgcls.training.guards,
imgcls.evaluation.tta) dispatch on it and name it in their errors. Choices implemented by data
and models keep their lists there (imgcls.data.balance, imgcls.data.pipelines.choice,
imgcls.data.augment, imgcls.models.registry).
"""

OPTIMIZERS = ("sgd", "adamw", "lars", "lamb")  # config.optimizer.name
SCHEDULES = ("cosine", "constant", "plateau", "linear")  # config.optimizer.schedule
PLATEAU_METRICS = ("loss", "accuracy")  # config.optimizer.plateau_metric, of the validation
ON_NONFINITE = ("stop", "skip")  # config.on_nonfinite
TTA_MODES = ("none", "flip", "flip_shift")  # config.eval_tta and --tta
