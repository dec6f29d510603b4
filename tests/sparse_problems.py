"""A small embedding model whose table gets a sparse gradient (tf.IndexedSlices), fed the same
float data as problems.py (so resume.py and the Horovod workers can train it unchanged), with
gradients computed independently in NumPy.

The model: x (N, 5 floats) -> ids = min(int(|x| * 6), 19), 5 per sample (a Lambda layer, so a
saved model rebuilds it) -> Embedding(24, 4) -> mean over the 5 -> concatenated with
Dense(3, tanh)(x) -> Dense(1), MSE. A batch of 16 samples (problems.batches of problems.data())
looks up 80 ids, 13-14 distinct: rows 0-4, 6-9 and 11 in every batch, 5, 10 and 12-16 in some,
17-23 in none.
"""
import numpy as np
import keras
import tensorflow as tf
from keras import backend as K

import problems

ROWS, WIDTH, LENGTH, HIDDEN = 24, 4, problems.D, 3
TOP = 19  # the largest id
TABLE = 0  # the index of the table in the model's weights


def to_ids(x):
    """Float features -> ids (a Lambda's function: it may refer to K only, which is what
    keras.layers.core sees when Keras loads the saved model)."""
    return K.minimum(K.cast(K.abs(x) * 6., 'int32'), 19)


def numpy_ids(x):
    """`to_ids` in NumPy: the same float32 product, truncated."""
    return np.minimum((np.abs(x.astype(np.float32)) * np.float32(6.)).astype(np.int32), TOP)


def initial_weights(seed=3):
    rng = np.random.RandomState(seed)
    return [(0.5 * rng.randn(ROWS, WIDTH)).astype('float32'),
            (0.5 * rng.randn(LENGTH, HIDDEN)).astype('float32'),
            (0.1 * rng.randn(HIDDEN)).astype('float32'),
            (0.5 * rng.randn(WIDTH + HIDDEN, 1)).astype('float32'),
            (0.1 * rng.randn(1)).astype('float32')]


def model(weights=None, embeddings_constraint=None):
    """The embedding model with `initial_weights()` (or `weights`); the table is first."""
    tf.set_random_seed(0)
    inputs = keras.layers.Input((LENGTH,))
    ids = keras.layers.Lambda(to_ids)(inputs)
    table = keras.layers.Embedding(ROWS, WIDTH, input_length=LENGTH,
                                   embeddings_constraint=embeddings_constraint)(ids)
    pooled = keras.layers.GlobalAveragePooling1D()(table)
    hidden = keras.layers.Dense(HIDDEN, activation='tanh')(inputs)
    output = keras.layers.Dense(1)(keras.layers.Concatenate()([pooled, hidden]))
    built = keras.models.Model(inputs, output)
    built.set_weights(weights if weights is not None else initial_weights())
    assert 'embeddings' in built.trainable_weights[TABLE].name
    return built


def compiled(optimizer, **kwargs):
    """`model()` compiled with `optimizer` (injected, if it needs that), MSE loss."""
    built = model(**kwargs)
    built.compile(optimizer, 'mse')
    if getattr(optimizer, 'needs_inject', False):
        optimizer.inject(built)
    return built


def densified(optimizer):
    """`optimizer`, fed the dense form of every gradient (tf.convert_to_tensor of the
    IndexedSlices: what Keras 2.2.4 does to it), then its own clipping: the reference the sparse
    path must equal. Patches this instance's `get_gradients` only."""
    def get_gradients(loss, params):
        grads = [tf.convert_to_tensor(g) for g in K.gradients(loss, params)]
        return optimizer.clip_gradients(grads)
    optimizer.get_gradients = get_gradients
    return optimizer


def numpy_gradients(weights, x, y):
    """Gradients of the model's MSE in float64: dense arrays, and the table's as the rows
    `(unique ids, summed values)`."""
    table, w1, b1, w2, b2 = [np.asarray(w, dtype=np.float64) for w in weights]
    ids = numpy_ids(x)
    x, y = x.astype(np.float64), y.astype(np.float64)
    pooled = table[ids].mean(axis=1)
    h = np.tanh(x.dot(w1) + b1)
    z = np.concatenate([pooled, h], axis=1)
    d_out = 2. * (z.dot(w2) + b2 - y) / y.size
    d_z = d_out.dot(w2.T)
    d_pooled, d_h = d_z[:, :WIDTH], d_z[:, WIDTH:]
    d_pre = d_h * (1. - h ** 2)
    d_table = np.zeros_like(table)
    np.add.at(d_table, ids.ravel(), np.repeat(d_pooled / LENGTH, LENGTH, axis=0))
    grads = [d_table, x.T.dot(d_pre), d_pre.sum(axis=0), z.T.dot(d_out), d_out.sum(axis=0)]
    return grads, np.unique(ids)


def touched(x):
    """The rows a batch `x` looks up."""
    return np.unique(numpy_ids(x))
