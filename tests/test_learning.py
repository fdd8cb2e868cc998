"""Learning for real: a masked network on a slice of the real MNIST."""

import keras
import numpy as np
import pytest

from ssm_keras import data, layers, models


def _accuracy(model, images, labels):
    return float(np.mean(np.argmax(model.predict(images, verbose=0), axis=1) == labels))


@pytest.mark.slow
def test_scores_alone_learn_mnist(mnist_dir):
    splits = data.load_splits("mnist", data_dir=str(mnist_dir.parent), validation_size=0,
                              max_examples=12000)
    train_images, train_labels = splits.train[0][:12000].astype(np.float32), splits.train[1][:12000]
    test_images, test_labels = splits.test[0][:2000].astype(np.float32), splits.test[1][:2000]
    model = models.build_architecture("fcn", input_shape=(28, 28, 1), num_classes=10, seed=0)
    random_mask_accuracy = _accuracy(model, test_images, test_labels)
    kernels = [layer.kernel_variable().numpy() for layer in layers.masked_layers(model)]
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
        loss="sparse_categorical_crossentropy",
    )
    model.fit(train_images, train_labels, batch_size=128, epochs=2, verbose=0)
    trained_accuracy = _accuracy(model, test_images, test_labels)
    assert random_mask_accuracy < 0.25
    assert trained_accuracy > 0.85, trained_accuracy
    for layer, kernel in zip(layers.masked_layers(model), kernels):
        np.testing.assert_array_equal(layer.kernel_variable().numpy(), kernel)
