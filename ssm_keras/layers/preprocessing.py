"""`PerImageStandardization`: the zoo models' first layer."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="ssm_keras")
class PerImageStandardization(keras.layers.Layer):
    """`(x - mean(x)) / max(std(x), 1 / sqrt(n))` per image, as
    `tf.image.per_image_standardization`; the models' first layer, so that
    they take raw pixels."""

    def call(self, inputs):
        standardized = tf.image.per_image_standardization(tf.cast(inputs, "float32"))
        return tf.cast(standardized, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape
