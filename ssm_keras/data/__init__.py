"""Image classification data: local files or tensorflow_datasets to tf.data."""

from ssm_keras.data.sources import (  # noqa: F401
    AUGMENTATIONS,
    DATASETS,
    Arrays,
    DataError,
    DatasetSpec,
    Splits,
    load_splits,
    make_dataset,
    make_epoch_dataset,
)
