"""Masked recurrent layers: `SimpleRNN`, `LSTM` and `GRU` with masked cells.

A masked cell (`MaskedLSTMCell`, ...) masks the input kernel `kernel` and
the recurrent kernel `recurrent_kernel`, each with its scores and threshold
(`scores`, `threshold`, `recurrent_scores`, `recurrent_threshold`). The
masked layer is the stock layer with its cell replaced by the masked cell
built from the stock cell's config: both effective kernels are computed once
per call and serve every time step (and the cuDNN path, which reads
`cell.kernel` and `cell.recurrent_kernel`).

The stock layers take `seed` for their dropout; the mask's seed is
`mask_seed`. The cell is seeded as `<layer>/<cell>` (`lstm/lstm_cell`).
"""

import keras

from ssm_keras.layers import registry
from ssm_keras.layers.base import MaskedContainer, MaskedLayer


class _MaskedCell(MaskedLayer):
    masked_kernels = {"kernel": "kernel_initializer",
                      "recurrent_kernel": "recurrent_initializer"}


@keras.saving.register_keras_serializable(package="ssm_keras")
@registry.register
class MaskedSimpleRNNCell(_MaskedCell, keras.layers.SimpleRNNCell):
    """`keras.layers.SimpleRNNCell` with masked kernel and recurrent kernel."""


@keras.saving.register_keras_serializable(package="ssm_keras")
@registry.register
class MaskedLSTMCell(_MaskedCell, keras.layers.LSTMCell):
    """`keras.layers.LSTMCell` with masked kernel and recurrent kernel."""


@keras.saving.register_keras_serializable(package="ssm_keras")
@registry.register
class MaskedGRUCell(_MaskedCell, keras.layers.GRUCell):
    """`keras.layers.GRUCell` with masked kernel and recurrent kernel."""


class _MaskedRNN(MaskedContainer):
    """A recurrent layer whose cell is the masked cell `masked_cell_class`."""

    sublayer_attributes = ("cell",)
    kernel_initializer_arguments = ("kernel_initializer", "recurrent_initializer")
    masked_cell_class = None

    def __init__(self, units, **kwargs):
        arguments = self._pop_container_arguments(kwargs)
        super().__init__(units, **kwargs)
        self._set_mask_arguments(arguments)
        stock = self.cell
        extra = {"implementation": stock.implementation} if hasattr(stock, "implementation") else {}
        cell = self._masked_copy(self.masked_cell_class, stock, **extra)
        self._tracker.untrack(stock)
        self.cell = cell

    @classmethod
    def counterpart_config(cls, layer):
        """The stock layer's config and, for LSTM and GRU, the cell's
        `implementation`, which Keras leaves out of it (1 and 2 differ by
        round-off)."""
        config = layer.get_config()
        if hasattr(layer.cell, "implementation"):
            config["implementation"] = layer.cell.implementation
        return config

    @classmethod
    def sublayer_uses(cls, layer, sublayer, leaf_class, name, input_shape):
        """Each kernel entry is used once per time step."""
        return input_shape[1]

    def get_config(self):
        config = super().get_config()
        if hasattr(self.cell, "implementation"):
            config["implementation"] = self.cell.implementation
        return config

    def call(self, sequences, initial_state=None, mask=None, training=False):
        with self.cell.effective_kernels_scope(training):
            return super().call(sequences, initial_state=initial_state, mask=mask,
                                training=training)


@keras.saving.register_keras_serializable(package="ssm_keras")
@registry.register
class MaskedSimpleRNN(_MaskedRNN, keras.layers.SimpleRNN):
    """`keras.layers.SimpleRNN` with a `MaskedSimpleRNNCell`.

    Example:

    >>> MaskedSimpleRNN(4, mask_seed=0)(np.ones((2, 5, 3))).shape
    (2, 4)
    """

    masked_cell_class = MaskedSimpleRNNCell


@keras.saving.register_keras_serializable(package="ssm_keras")
@registry.register
class MaskedLSTM(_MaskedRNN, keras.layers.LSTM):
    """`keras.layers.LSTM` with a `MaskedLSTMCell`."""

    masked_cell_class = MaskedLSTMCell


@keras.saving.register_keras_serializable(package="ssm_keras")
@registry.register
class MaskedGRU(_MaskedRNN, keras.layers.GRU):
    """`keras.layers.GRU` with a `MaskedGRUCell`."""

    masked_cell_class = MaskedGRUCell
