"""config.model.features='auto' for the cnn: as many [conv, pool] stages as the resolution needs.

Each stage halves the feature map. 'auto' stacks stages until the shorter side of the map is at
most FINAL_MAP (64x64 -> 4x4 in 4 stages, 28x28 -> 4x4 in 3, 128x128 -> 4x4 in 5), so small
images do not end in 1x1 maps and large ones do not flatten a huge map into the dense layer.
The widths start at FIRST_WIDTH and double per stage, up to MAX_WIDTH: at 64x64 this is
(16, 32, 64, 128), what configs/folder_cnn.py used before 'auto'. TF-free.
"""

import math

from imgcls.values import is_auto, parse_value

FIRST_WIDTH, MAX_WIDTH, FINAL_MAP = 16, 256, 4


def cnn_features(height: int, width: int) -> tuple[int, ...]:
    """The widths of the cnn's stages for height x width images."""
    side = min(height, width)
    stages = max(1, math.ceil(math.log2(side / FINAL_MAP))) if side > FINAL_MAP else 1
    return tuple(min(FIRST_WIDTH * 2**i, MAX_WIDTH) for i in range(stages))


def resolve_model(config, image_shape):
    """(config with config.model.features resolved for images of image_shape, notes for the
    log); the config is changed in place (a resolved copy is expected)."""
    model = config.model
    if "features" not in model:
        return config, []
    value = parse_value(model.features, "model.features")
    note = []
    if is_auto(value):
        height, width = image_shape[:2]
        value = cnn_features(height, width)
        sides = [min(height, width)]
        for _ in value:
            sides.append(math.ceil(sides[-1] / 2))
        note = [
            f"model.features: auto -> {value} ({len(value)} stage(s) for {height}x{width} "
            f"images, the shorter side {' -> '.join(map(str, sides))})"
        ]
    with model.ignore_type():
        model.features = tuple(value) if isinstance(value, list | tuple) else value
    return config, note
