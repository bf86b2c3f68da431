"""The augmentation table (imgcls.data.augment.table) is complete and true.

Complete: every config.augment key of the schema (configs/default.py) has a row, so a new key
cannot be silently ignored by a pipeline that 'auto' picks. True: a row's pipelines are the
ones that change the images when the key is on (tf.data's preprocessing, the device pipeline's
augmenter and iterator, the train step's mixing), its settings change what their augmentation
does, 'auto' chooses by it, and each pipeline refuses what the table says it does not do.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from imgcls import parallel
from imgcls.config import check as config_check
from imgcls.config import schema
from imgcls.data.augment import jax_ops, table
from imgcls.data.info import DatasetInfo
from imgcls.data.pipelines import choice
from imgcls.training.step import StepOptions

SHAPE, COPIES = (12, 12, 3), 8
SWITCHES = [key for key, row in table.ROWS.items() if row.off is not None]
SETTINGS = [key for key, row in table.ROWS.items() if row.off is None]


def aug_with(**values):
    config = schema.defaults()
    config.augment.random_crop_padding = 0  # the schema's default is on: start from all off
    for key, value in values.items():
        config.augment[key] = value
    return config


def test_every_config_augment_key_has_a_row_and_every_row_a_key():
    keys = set(schema.defaults().augment)
    assert keys - set(table.ROWS) == set(), "config.augment keys without a row in the table"
    assert set(table.ROWS) - keys == set(), "rows for keys the schema does not have"


def test_rows_are_well_formed():
    for key, row in table.ROWS.items():
        assert row.key == key
        assert row.rule[0](row.example), (key, row.example)  # the example is a valid value
        assert row.example != row.off
        if row.off is None:  # a setting: of a switch, implemented where the switch is
            assert row.of in SWITCHES and not row.pipelines, key
        else:
            assert row.rule[0](row.off) and row.pipelines and not row.of, key
            assert set(row.pipelines) <= {table.TF, table.DEVICE, table.STEP}
            assert set(row.native_size_only) <= set(row.pipelines)


def test_the_config_check_applies_every_rows_rule():
    for key, row in table.ROWS.items():
        assert config_check.RULES[f"augment.{key}"] == row.rule
    config = aug_with(hue=0.7, area_range=(0.5, 0.1))
    assert config_check.problems(config) == [
        "config.augment.area_range=(0.5, 0.1) must be 2 numbers with 0 < low <= high <= 1.",
        "config.augment.hue=0.7 must be in [0, 0.5].",
    ]


def test_all_off_is_what_the_schema_starts_from():
    assert table.switched_on(aug_with().augment) == []
    assert table.switched_on(schema.defaults().augment) == ["random_crop_padding"]


def tf_augmented(config, native_size=True):
    """COPIES tf.data training preprocessings of one image (keys 0..COPIES-1)."""
    from imgcls.data import preprocess
    from imgcls.data._tf import tf

    config.dataset.image_size = 0 if native_size else SHAPE[0]
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3) if not native_size else SHAPE)
    example = {"image": tf.constant(image, tf.uint8), "label": tf.constant(0)}
    keys = [tf.constant([0, k], tf.int64) for k in range(COPIES)]
    return np.stack(
        [preprocess.preprocess_train(example, key, config, SHAPE)["image"] for key in keys]
    )


def device_augmented(config, native_size=True):
    """The device pipeline's augmenter on COPIES images (mean-filled cutout, as it fills)."""
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (COPIES, *SHAPE)), jnp.uint8)
    config.dataset.image_size = 0 if native_size else SHAPE[0]
    augment = jax_ops.augment_batch
    return np.asarray(
        augment(images, jax.random.key(0), config.augment, fill=(128,) * 3, native_size=native_size)
    )


def differs(a, b) -> bool:
    return a.shape != b.shape or not np.array_equal(a, b)


@pytest.mark.parametrize("key", [k for k in SWITCHES if table.TF in table.ROWS[k].pipelines])
def test_tf_rows_change_the_tf_data_images(key):
    on = aug_with(**{key: table.ROWS[key].example})
    assert differs(tf_augmented(on), tf_augmented(aug_with()))


# The alternating flip is the device iterator's (it mirrors by epoch): tested through it below.
DEVICE_AUGMENTER = [
    k for k in SWITCHES if table.DEVICE in table.ROWS[k].pipelines and k != "alternating_flip"
]


@pytest.mark.parametrize("key", DEVICE_AUGMENTER)
def test_device_rows_change_the_device_pipelines_images(key):
    row = table.ROWS[key]
    on, off = aug_with(**{key: row.example}), aug_with()
    assert differs(device_augmented(on), device_augmented(off))
    if table.DEVICE in row.native_size_only:  # resized on loading: the originals are gone
        with pytest.raises(ValueError, match=rf"config\.augment\.{key}=.*pipeline='tf'"):
            device_augmented(on, native_size=False)


def test_the_alternating_flip_is_the_device_iterators(data_dir):
    from imgcls.data.pipelines import device

    def first_batch(**augment):
        config = aug_with(**augment)
        config.dataset.name, config.dataset.image_shape = "synthetic", SHAPE
        config.dataset.num_train_examples, config.batch_size = 16, 8
        config.dataset.data_dir, config.dataset.pipeline = data_dir, "device"
        info = DatasetInfo("synthetic", 10, tuple("0123456789"), SHAPE, {"train": 16})
        mesh = parallel.create_mesh(jax.devices()[:1])
        return np.asarray(next(device.DeviceTrainIterator(config, info, 0, mesh))["image"])

    assert differs(first_batch(alternating_flip=True), first_batch())


@pytest.mark.parametrize("key", [k for k in SWITCHES if table.STEP in table.ROWS[k].pipelines])
def test_step_rows_mix_the_train_steps_images(key):
    config = aug_with(**{key: table.ROWS[key].example})
    options = StepOptions.from_config(config, 4, parallel.create_mesh(jax.devices()[:1]))
    images = jax.random.uniform(jax.random.key(0), (COPIES, *SHAPE))
    targets = jax.nn.one_hot(jnp.arange(COPIES) % 4, 4)
    mixed, _ = jax_ops.mix(images, targets, jax.random.key(1), options.mixup, options.cutmix)
    assert differs(np.asarray(mixed), np.asarray(images))


EXAMPLES_OF = {"random_resized_crop": True, "random_crop_padding": 3, "policy": "randaugment"}


@pytest.mark.parametrize("key", SETTINGS)
def test_settings_change_what_their_augmentation_does(key):
    row = table.ROWS[key]
    base = {row.of: EXAMPLES_OF[row.of]}
    changed = aug_with(**base, **{key: row.example})
    pipelines = table.ROWS[row.of].pipelines
    assert differs(tf_augmented(changed), tf_augmented(aug_with(**base)))
    if table.DEVICE in pipelines:
        assert differs(device_augmented(changed), device_augmented(aug_with(**base)))


@pytest.mark.parametrize("key", SWITCHES)
def test_auto_chooses_a_pipeline_that_implements_the_key(key):
    config = aug_with(**{key: table.ROWS[key].example})
    config.dataset.image_size = 0
    info = DatasetInfo("synthetic", 10, tuple("0123456789"), SHAPE, {"train": 64})
    chosen, why = choice.choose(config, info)
    assert table.implements(table.ROWS[key], chosen, native_size=True)
    if table.ROWS[key].pipelines in ((table.TF,), (table.DEVICE,)):
        assert f"config.augment.{key}" in why


def test_each_pipeline_refuses_what_it_does_not_implement_and_says_what_it_does():
    rotation = aug_with(rotation=10.0).augment
    with pytest.raises(ValueError) as refused:
        table.check_implemented(rotation, table.DEVICE)
    assert str(refused.value) == (
        "config.augment.rotation=10.0: only the tf.data input pipeline implements this (the "
        "device input pipeline does random_crop_padding, horizontal_flip, vertical_flip, "
        "alternating_flip, cutout, erasing, random_resized_crop at the native size). Set "
        "config.dataset.pipeline='tf' (or 'auto') or switch it off."
    )
    with pytest.raises(ValueError, match=r"cutout=3: only the device input pipeline"):
        table.check_implemented(aug_with(cutout=3).augment, table.TF)
    table.check_implemented(aug_with(mixup=1.0, erasing=0.5).augment, table.TF)
    table.check_implemented(aug_with(mixup=1.0, erasing=0.5).augment, table.DEVICE)
