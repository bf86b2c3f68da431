"""Models: the registry (`config.model.name` -> a Flax module), the contract every model keeps,
and the architectures.

registry.py builds a model from a config; contract.py says what each model provides (the
`head` classifier, the Grad-CAM feature map, the variable collections, optional freezing and
data-dependent initialisation); cnn.py, resnet.py (v1.5), resnet_v1.py (Keras' layout),
wide_resnet.py (WRN, PreAct ResNet) and airbench.py are the architectures, pooling.py and
drop_path.py their shared layers, sizing.py the cnn's 'auto' width rule. May import only JAX,
Flax and imgcls.values: models know nothing of data, training or evaluation.
"""

from imgcls.models.airbench import Airbench, Airbench94, Airbench96
from imgcls.models.cnn import CNN
from imgcls.models.registry import (
    MODELS,
    count_params,
    create_model,
    data_init,
    from_config,
    frozen_params,
    has_frozen_backbone,
    model_fields,
    module_class,
)
from imgcls.models.resnet import (
    BottleneckResNetBlock,
    ResNet,
    ResNet18,
    ResNet34,
    ResNet50,
    ResNet101,
    ResNet152,
    ResNet200,
    ResNetBlock,
)
from imgcls.models.resnet_v1 import (
    BottleneckResNetV1Block,
    ResNet50V1,
    ResNet101V1,
    ResNet152V1,
    ResNetV1,
)
from imgcls.models.wide_resnet import (
    WRN16_8,
    WRN28_10,
    PreActBlock,
    PreActResNet,
    PreActResNet18,
    WideResNet,
)

__all__ = [
    "MODELS",
    "Airbench",
    "Airbench94",
    "Airbench96",
    "CNN",
    "BottleneckResNetBlock",
    "BottleneckResNetV1Block",
    "ResNet",
    "ResNetBlock",
    "ResNet18",
    "ResNet34",
    "ResNet50",
    "ResNet101",
    "ResNet152",
    "ResNet200",
    "ResNetV1",
    "ResNet50V1",
    "ResNet101V1",
    "ResNet152V1",
    "PreActBlock",
    "PreActResNet",
    "PreActResNet18",
    "WideResNet",
    "WRN16_8",
    "WRN28_10",
    "count_params",
    "create_model",
    "data_init",
    "frozen_params",
    "from_config",
    "has_frozen_backbone",
    "model_fields",
    "module_class",
]
