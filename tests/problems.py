"""Small training problems with gradients computed independently in NumPy (hand-written backprop),
so a NumPy reference optimizer can follow a Keras model step by step."""
import numpy as np
import keras
import tensorflow as tf
from keras import backend as K

N, D, H = 64, 5, 4


def data(seed=0, n=N):
    rng = np.random.RandomState(seed)
    x = rng.randn(n, D).astype('float32')
    y = (np.sin(x.sum(axis=1, keepdims=True)) + 0.1 * rng.randn(n, 1)).astype('float32')
    return x, y


def initial_weights(seed=1):
    rng = np.random.RandomState(seed)
    return [(0.5 * rng.randn(D, H)).astype('float32'), (0.1 * rng.randn(H)).astype('float32'),
            (0.5 * rng.randn(H, 1)).astype('float32'), (0.1 * rng.randn(1)).astype('float32')]


def batches(x, y, size=16):
    """The i-th batch, cycling through the data in order."""
    count = len(x) // size
    return lambda i: (x[i % count * size:(i % count + 1) * size],
                      y[i % count * size:(i % count + 1) * size])


def mlp(weights=None, kernel_constraint=None):
    """Dense(H, tanh) -> Dense(1), MSE; the same function as `numpy_gradients`."""
    tf.set_random_seed(0)
    model = keras.models.Sequential([
        keras.layers.Dense(H, activation='tanh', input_shape=(D,)),
        keras.layers.Dense(1, kernel_constraint=kernel_constraint)])
    model.set_weights(weights if weights is not None else initial_weights())
    return model


def compiled(optimizer):
    """`mlp()` compiled with `optimizer` (injected, if it needs that), MSE loss."""
    model = mlp()
    model.compile(optimizer, 'mse')
    if getattr(optimizer, 'needs_inject', False):
        optimizer.inject(model)
    return model


def trajectory(optimizer, steps):
    """The flat weights of `mlp()` trained with `optimizer` after each of `steps`
    train_on_batch steps on `batches(*data())`."""
    model = compiled(optimizer)
    batch_of = batches(*data())
    weights = []
    for i in range(steps):
        model.train_on_batch(*batch_of(i))
        weights.append(flat(model.get_weights()))
    return np.array(weights)


def numpy_gradients(weights, x, y):
    """Gradients of mean((tanh(x W1 + b1) W2 + b2 - y)^2), in float64."""
    w1, b1, w2, b2 = [np.asarray(w, dtype=np.float64) for w in weights]
    x, y = x.astype(np.float64), y.astype(np.float64)
    h = np.tanh(x.dot(w1) + b1)
    d_out = 2. * (h.dot(w2) + b2 - y) / y.size
    d_z = d_out.dot(w2.T) * (1. - h ** 2)
    return [x.T.dot(d_z), d_z.sum(axis=0), h.T.dot(d_out), d_out.sum(axis=0)]


def flat(arrays):
    return np.concatenate([np.ravel(a) for a in arrays])


def gated(keras_class):
    """Keras's own optimizer class without the weight-read race (see posts.race_free)."""
    from keras_opt_legacy.reproduce.posts import race_free
    return race_free(keras_class)


def train(model, steps, batch_of, callback=None):
    for i in range(steps):
        model.train_on_batch(*batch_of(i))
        if callback:
            callback(i)
    return model


def session():
    return K.get_session()
