"""Defects found by hostile probing (issue 15), each reproduced: the test fails on the code
before its fix. Bad input gets a clear error and changes nothing."""
import os

import h5py
import numpy as np
import pytest
import keras
import tensorflow as tf
from keras import backend as K

import keras_opt_legacy as kol
from keras_opt_legacy import schedules
from keras_opt_legacy.callbacks import Checkpoint
import problems

X, Y = problems.data(n=64)
BATCH_OF = problems.batches(X, Y, 16)


def trained(optimizer=None, steps=3):
    model = problems.compiled(optimizer or kol.Adam(0.01))
    problems.train(model, steps, BATCH_OF)
    return model


# ---- checkpoints -----------------------------------------------------------------------------

def test_a_save_on_an_epochs_last_batch_counts_that_epoch_as_completed(tmp_path):
    """#1: every_batches=4 with 4 batches per epoch recorded the running epoch (0), so a resume
    trained epoch 0 again."""
    directory = str(tmp_path)
    model = problems.compiled(kol.Adam(0.01))
    model.fit(X, Y, batch_size=16, epochs=1, shuffle=False, verbose=0,
              callbacks=[Checkpoint(directory, every_batches=4)])
    loaded, epoch = Checkpoint.load_latest(directory)
    assert epoch == 1
    loaded.fit(X, Y, batch_size=16, epochs=2, initial_epoch=epoch, shuffle=False, verbose=0)
    straight = problems.compiled(kol.Adam(0.01))
    straight.fit(X, Y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    np.testing.assert_array_equal(problems.flat(loaded.get_weights()),
                                  problems.flat(straight.get_weights()))


def test_a_mid_epoch_save_records_the_batches_already_trained(tmp_path):
    directory = str(tmp_path)
    model = problems.compiled(kol.Adam(0.01))
    model.fit(X, Y, batch_size=16, epochs=1, shuffle=False, verbose=0,
              callbacks=[Checkpoint(directory, every_batches=3)])
    _, epoch, batch = Checkpoint.load(Checkpoint.latest(directory), with_batch=True)
    assert (epoch, batch) == (0, 3)


def test_checkpoint_numbers_past_ten_to_the_eight_are_found_and_sorted(tmp_path):
    """#12: '%08d' grows a ninth digit past 10^8 batches; the pattern read exactly eight."""
    for number in (99999999, 100000000, 100000001):
        open(str(tmp_path / ('checkpoint-%08d.h5' % number)), 'w').close()
    found = [os.path.basename(p) for p in Checkpoint.checkpoints(str(tmp_path))]
    assert found == ['checkpoint-99999999.h5', 'checkpoint-100000000.h5',
                     'checkpoint-100000001.h5']


@pytest.mark.parametrize('options, error', [
    ({'keep': '3'}, TypeError), ({'keep': None}, TypeError), ({'keep': 2.5}, TypeError),
    ({'keep': 0}, ValueError), ({'every_batches': '5'}, TypeError),
    ({'every_batches': 2.5}, TypeError), ({'every_batches': 0}, ValueError)])
def test_checkpoint_arguments_are_checked_at_construction(tmp_path, options, error):
    """#17: '3' and None failed late or obscurely; 2.5 saved every 5 batches."""
    with pytest.raises(error, match=next(iter(options))):
        Checkpoint(str(tmp_path), **options)


def test_an_unwritable_directory_is_refused_at_construction(tmp_path, monkeypatch):
    """#18: reported only after a whole epoch. (As root, file modes do not stop writes: the
    refusal is simulated.)"""
    def refuse(path, *args, **kwargs):
        raise PermissionError(13, 'Permission denied', path)
    directory = str(tmp_path)
    monkeypatch.setattr('builtins.open', refuse)
    with pytest.raises(OSError, match='not writable'):
        Checkpoint(directory)


def test_a_damaged_newest_checkpoint_falls_back_to_an_older_one(tmp_path):
    """#19: load_latest raised although intact older checkpoints existed."""
    directory = str(tmp_path)
    model = problems.compiled(kol.Adam(0.01))
    model.fit(X, Y, batch_size=16, epochs=2, shuffle=False, verbose=0,
              callbacks=[Checkpoint(directory)])
    newest = Checkpoint.latest(directory)
    with open(newest, 'r+b') as f:  # truncated, as by a full disk outside our atomic rename
        f.truncate(100)
    with pytest.warns(UserWarning, match='cannot be loaded'):
        loaded, epoch = Checkpoint.load_latest(directory)
    assert epoch == 1


def test_a_failed_save_leaves_no_temporary_and_stale_ones_are_removed(tmp_path, monkeypatch):
    """#19: ENOSPC and SIGKILL left `.tmp` files forever."""
    directory = str(tmp_path)
    stale = os.path.join(directory, '.checkpoint-00000004.h5.999999999.tmp')  # no such process
    open(stale, 'w').close()
    checkpoint = Checkpoint(directory)
    assert not os.path.exists(stale)
    checkpoint.set_model(trained())

    def full_disk(model, path, overwrite=True):
        open(path, 'w').close()
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr('keras_opt_legacy.callbacks.save_model', full_disk)
    with pytest.raises(OSError):
        checkpoint.save(epoch=1)
    assert os.listdir(directory) == []


# ---- files -------------------------------------------------------------------------------------

def test_save_model_without_overwrite_answered_no_keeps_the_file(tmp_path, monkeypatch):
    """#2: Keras did not write, then save_model wrote the other model's state names into the
    kept file, which its own model could no longer load."""
    path = str(tmp_path / 'm.h5')
    first = trained(kol.Adam(0.01))
    kol.save_model(first, path)
    before = open(path, 'rb').read()
    monkeypatch.setattr('keras_opt_legacy.state.ask_to_proceed_with_overwrite', lambda p: False)
    kol.save_model(trained(kol.Lookahead(kol.SGD(0.1))), path, overwrite=False)
    assert open(path, 'rb').read() == before
    kol.load_optimizer_state(problems.compiled(kol.Adam(0.01)), path)


def _crafted(tmp_path, edit):
    path = str(tmp_path / 'crafted.h5')
    kol.save_model(trained(kol.Adam(0.01)), path)
    with h5py.File(path, 'r+') as f:
        edit(f)
    return path


def _refused(path, match):
    model = trained(kol.Adam(0.01))
    before = [K.get_value(v) for v in model.optimizer.weights]
    with pytest.raises(ValueError, match=match):
        kol.load_optimizer_state(model, path)
    for b, v in zip(before, model.optimizer.weights):
        np.testing.assert_array_equal(K.get_value(v), b)


def test_links_to_elsewhere_are_not_followed(tmp_path):
    """#3: an external link put another file's bytes into a slot."""
    secret = str(tmp_path / 'secret.h5')
    with h5py.File(secret, 'w') as f:
        f['data'] = np.full((1, 1), 42., 'float32')

    def external(f):
        group = f['optimizer_weights']
        name = group.attrs['weight_names'][-1]
        key = name.decode('utf8') if isinstance(name, bytes) else name
        shape = group[key].shape
        with h5py.File(secret, 'a') as s:
            del s['data']
            s['data'] = np.full(shape, 42., 'float32')
        del group[key]
        group[key] = h5py.ExternalLink(secret, 'data')
    _refused(_crafted(tmp_path, external), 'ExternalLink')


def test_external_raw_storage_is_not_read(tmp_path):
    raw = str(tmp_path / 'raw.bin')

    def external_storage(f):
        group = f['optimizer_weights']
        name = group.attrs['weight_names'][-1]
        key = name.decode('utf8') if isinstance(name, bytes) else name
        shape = group[key].shape
        np.full(shape, 42., 'float32').tofile(raw)
        del group[key]
        group.create_dataset(key, shape=shape, dtype='float32',
                             external=[(raw, 0, h5py.h5f.UNLIMITED)])
    _refused(_crafted(tmp_path, external_storage), 'outside the file')


def test_a_declared_huge_array_is_refused_before_it_is_read(tmp_path, monkeypatch):
    """#7: every declared array was read before shapes were compared (28 KB declaring 512 MiB
    cost 1 GiB)."""
    def huge(f):
        group = f['optimizer_weights']
        name = group.attrs['weight_names'][-1]
        key = name.decode('utf8') if isinstance(name, bytes) else name
        del group[key]
        group.create_dataset(key, shape=(2 ** 40,), dtype='float32')  # 4 TiB, never written
    path = _crafted(tmp_path, huge)
    assert os.path.getsize(path) < 10 ** 6
    _refused(path, 'shape')


@pytest.mark.parametrize('edit, match', [
    (lambda f: f.attrs.__setitem__('training_config', '{}'), 'training_config'),
    (lambda f: f['optimizer_weights'].attrs.__delitem__('weight_names'), 'weight_names'),
    (lambda f: f['optimizer_weights'].attrs.__setitem__(
        'weight_names', [b'nowhere'] + list(f['optimizer_weights'].attrs['weight_names'])[1:]),
     'nowhere'),
])
def test_crafted_files_give_a_value_error_naming_the_problem(tmp_path, edit, match):
    """#20: these gave a KeyError."""
    _refused(_crafted(tmp_path, edit), match)


@pytest.mark.parametrize('value, match', [(np.nan, 'NaN'), (-1, 'counter'), (1e30, 'counter')])
def test_state_values_are_checked_before_anything_is_assigned(tmp_path, value, match):
    """#6: NaN slots and negative counters loaded; set_weights turned 1e30 into -9.2e18."""
    model = trained(kol.Adam(0.01))
    weights = model.optimizer.get_weights()
    name = 'm/dense_1/kernel' if np.isnan(value) else 'iterations'
    index = model.optimizer.weight_names.index(name)
    bad = list(weights)
    bad[index] = np.full_like(np.asarray(weights[index], dtype='float64'), value)
    with pytest.raises(ValueError, match=match):
        model.optimizer.set_weights(bad)
    for w, v in zip(weights, model.optimizer.get_weights()):
        np.testing.assert_array_equal(w, v)

    def poison(f):
        group = f['optimizer_weights']
        key = group.attrs['weight_names'][index]
        key = key.decode('utf8') if isinstance(key, bytes) else key
        data = group[key][()]
        group[key][...] = np.full_like(data, value if data.dtype.kind == 'f' else -1)
    _refused(_crafted(tmp_path, poison), match if value != 1e30 else 'counter')


# ---- values --------------------------------------------------------------------------------

@pytest.mark.parametrize('make, match', [
    (lambda: kol.Adam(epsilon=0), 'epsilon'),
    (lambda: kol.RMSprop(epsilon=0.), 'epsilon'),
    (lambda: kol.Adam(beta_1=1 - 1e-9), 'float32'),
    (lambda: kol.Adadelta(rho=1 - 1e-9), 'float32'),
    (lambda: kol.Adam(lr=1e39), 'float32'),
    (lambda: kol.Ftrl(lr=0), 'lr'),
    (lambda: kol.SGD(momentum=1.5), 'momentum'),
    (lambda: schedules.CosineDecayRestarts(0.1, 10, t_mul=0.5), 't_mul'),
    (lambda: schedules.PiecewiseConstantDecay(None, [0.1]), 'boundaries must be a list'),
    (lambda: schedules.ExponentialDecay(0.1, 10, 0.5, staircase='False'), 'staircase'),
    (lambda: schedules.PolynomialDecay(0.1, 10, cycle='False'), 'cycle'),
])
def test_values_that_would_break_training_are_refused(make, match):
    """#9, #21: each passed validation and then broke training (0/0, a float32 1.0, inf...)."""
    with pytest.raises((TypeError, ValueError), match=match):
        make()


def test_a_zero_dimensional_array_is_a_number():
    """#21"""
    assert K.get_value(kol.Adam(lr=np.array(0.02)).lr) == np.float32(0.02)


@pytest.mark.parametrize('floatx', ['float64', 'float16'])
def test_schedules_work_with_another_floatx(floatx):
    """#16: float64/float16 failed at the first batch with a dtype mismatch."""
    previous = K.floatx()
    K.set_floatx(floatx)
    try:
        model = keras.models.Sequential([keras.layers.Dense(1, input_shape=(5,))])
        model.compile(kol.Adam(schedules.ExponentialDecay(0.01, 10, 0.5),
                               epsilon=1e-3 if floatx == 'float16' else None), 'mse')
        before = model.get_weights()[0].copy()
        model.train_on_batch(X.astype(floatx), Y.astype(floatx))
        assert model.get_weights()[0].dtype == np.dtype(floatx)
        assert np.any(model.get_weights()[0] != before)
    finally:
        K.set_floatx(previous)


def test_lookahead_sync_keeps_the_constraint():
    """#11: unit_norm columns drifted to 0.98 after a sync."""
    model = problems.mlp(kernel_constraint=keras.constraints.unit_norm())
    model.compile(kol.Lookahead(kol.SGD(0.5), sync_period=2), 'mse')
    problems.train(model, 6, BATCH_OF)
    kernel = model.layers[1].get_weights()[0]
    np.testing.assert_allclose(np.linalg.norm(kernel, axis=0), 1., rtol=1e-6)


def test_gradient_accumulation_takes_keras_1_call_form():
    """#23: get_updates(params, constraints, loss) raised a TypeError."""
    model = problems.compiled(kol.Adam())
    opt = kol.GradientAccumulation(kol.Adam(), 2)
    updates = opt.get_updates(model._collected_trainable_weights, {}, model.total_loss)
    assert updates


class ManyWeights(keras.layers.Layer):
    """One layer holding `count` scalar weights (a large model's tensor count, quickly built)."""

    def __init__(self, count=1000, **kwargs):
        super(ManyWeights, self).__init__(**kwargs)
        self.count = count

    def build(self, input_shape):
        self.scalars = [self.add_weight('w%d' % i, (1,), initializer='ones')
                        for i in range(self.count)]
        super(ManyWeights, self).build(input_shape)

    def call(self, x):
        return K.sum(x, axis=1, keepdims=True) * tf.add_n(self.scalars) / self.count

    def compute_output_shape(self, input_shape):
        return input_shape[0], 1

    def get_config(self):
        config = super(ManyWeights, self).get_config()
        config['count'] = self.count
        return config


def _optimizer_names(path):
    """`(bytes of the optimizer's weight names, whether Keras had to split the attribute)`."""
    with h5py.File(path, 'r') as f:
        attrs = f['optimizer_weights'].attrs
        if 'weight_names' in attrs:
            return sum(len(n) for n in attrs['weight_names']), False
        chunks = [attrs[key] for key in attrs if key.startswith('weight_names')]
        return sum(len(n) for chunk in chunks for n in chunk), True


def test_a_thousand_tensor_model_saves_loads_and_resumes(tmp_path):
    """#14: names carried the parameter's name (62 bytes to Keras's 29); past 64 KB Keras splits
    the attribute and no loader could read it (about 520 tensors with our Adam)."""
    def model_with(optimizer):
        model = keras.models.Sequential([ManyWeights(1000, input_shape=(5,))])
        model.compile(optimizer, 'mse')
        model.train_on_batch(X, Y)
        return model
    ours, path = model_with(kol.Adam(0.01)), str(tmp_path / 'ours.h5')
    kol.save_model(ours, path)
    ours.train_on_batch(X, Y)
    expected = problems.flat(ours.get_weights())
    keras_path = str(tmp_path / 'keras.h5')
    model_with(keras.optimizers.Adam(0.01)).save(keras_path)
    (ours_bytes, ours_split), (keras_bytes, _) = _optimizer_names(path), \
        _optimizer_names(keras_path)
    assert not ours_split and ours_bytes <= keras_bytes  # Keras's own loader reads ours
    for load in (keras.models.load_model, kol.load_model):
        K.clear_session()
        loaded = load(path, custom_objects={'ManyWeights': ManyWeights})
        kol.load_optimizer_state(loaded, path)
        loaded.train_on_batch(X, Y)
        np.testing.assert_array_equal(problems.flat(loaded.get_weights()), expected)


# ---- misuse ----------------------------------------------------------------------------------

def batch_norm_model(optimizer):
    model = keras.models.Sequential([keras.layers.Dense(4, input_shape=(5,)),
                                     keras.layers.BatchNormalization(), keras.layers.Dense(1)])
    model.compile(optimizer, 'mse')
    if getattr(optimizer, 'needs_inject', False):
        optimizer.inject(model)
    return model


def test_skip_non_finite_can_protect_batch_norm_statistics():
    """#4: a NaN batch left the trainable weights alone but made the moving statistics NaN."""
    bad = X.copy()
    bad[0, 0] = np.nan
    protected = batch_norm_model(kol.SkipNonFinite(kol.Adam(0.01), model_updates='when_finite'))
    default = batch_norm_model(kol.SkipNonFinite(kol.Adam(0.01)))
    for model in (protected, default):
        model.train_on_batch(X, Y)
        model.train_on_batch(bad, Y)
        model.train_on_batch(X, Y)
    assert np.all(np.isfinite(problems.flat(protected.get_weights())))
    assert K.get_value(protected.optimizer.skipped) == 1
    assert np.all(np.isfinite(protected.predict(X)))
    # The default, as documented: the optimizer skipped, the model's statistics did not.
    assert not np.all(np.isfinite(problems.flat(default.get_weights())))
    # On finite batches 'when_finite' trains exactly as the default.
    twins = [batch_norm_model(kol.SkipNonFinite(kol.Adam(0.01), model_updates=updates))
             for updates in ('every_batch', 'when_finite')]
    twins[1].set_weights(twins[0].get_weights())
    for model in twins:
        problems.train(model, 4, BATCH_OF)
    np.testing.assert_array_equal(problems.flat(twins[0].get_weights()),
                                  problems.flat(twins[1].get_weights()))


@pytest.mark.parametrize('make', [
    lambda: kol.Adam(), lambda: kol.Nadam(), lambda: kol.SGD(0.1, momentum=0.9),
    lambda: kol.GradientAccumulation(kol.Adam(), 2), lambda: kol.Lookahead(kol.Adam()),
    lambda: kol.SkipNonFinite(keras.optimizers.SGD()),
    lambda: kol.GradientAccumulation(keras.optimizers.Adam(), 2), lambda: kol.Heun(),
    lambda: kol.RK45()], ids=['Adam', 'Nadam', 'SGD', 'accumulation', 'lookahead', 'skip',
                              'accumulation-keras', 'Heun', 'RK45'])
def test_a_model_without_trainable_weights_trains_as_a_no_op(make):
    """#15: 'Must have at least one Tensor: []' (Keras trains it: its own tests rely on it)."""
    model = keras.models.Sequential([keras.layers.Dense(4, input_shape=(5,), trainable=False)])
    optimizer = make()
    model.compile(optimizer, 'mse')
    if getattr(optimizer, 'needs_inject', False):
        optimizer.inject(model)
    before = model.get_weights()
    model.train_on_batch(X, np.zeros((len(X), 4), 'float32'))
    for b, w in zip(before, model.get_weights()):
        np.testing.assert_array_equal(b, w)
    assert K.get_value(optimizer.iterations) == 1


def test_one_optimizer_in_two_models_is_refused_and_recompiling_works():
    """#5: two models shared `iterations` and save_model(A) wrote B's slots."""
    optimizer = kol.Adam(0.01)
    first = trained(optimizer)
    first.compile(optimizer, 'mse')  # recompiling the same model
    first.train_on_batch(*BATCH_OF(0))
    first.layers[0].trainable = False  # freezing, then unfreezing, a layer
    first.compile(optimizer, 'mse')
    first.train_on_batch(*BATCH_OF(1))
    first.layers[0].trainable = True
    first.compile(optimizer, 'mse')
    first.train_on_batch(*BATCH_OF(2))
    with pytest.raises(ValueError, match='one optimizer instance serves one model'):
        trained(optimizer)


@pytest.mark.parametrize('make, bad', [
    (lambda: kol.Adam(0.01), -1.), (lambda: kol.Adam(0.01), np.nan),
    (lambda: kol.Lookahead(kol.SGD(0.1)), np.inf), (lambda: kol.Ftrl(0.1), 0.),
    (lambda: kol.RK45(0.01), np.nan)])
def test_setting_a_bad_rate_at_run_time_is_refused(make, bad):
    """#10: K.set_value(opt.lr, -1) / NaN and a LearningRateScheduler returning NaN went
    through (loss 1.24 -> 172); RK45 with a NaN step stopped training for good."""
    optimizer = make()
    model = trained(optimizer)
    with pytest.raises(tf.errors.InvalidArgumentError, match='learning rate'):
        K.set_value(optimizer.lr, bad)
    scheduler = keras.callbacks.LearningRateScheduler(lambda epoch: float(bad))
    with pytest.raises(tf.errors.InvalidArgumentError, match='learning rate'):
        model.fit(X, Y, epochs=1, verbose=0, callbacks=[scheduler])
    assert np.isfinite(K.get_value(optimizer.lr)) and K.get_value(optimizer.lr) > 0
    K.set_value(optimizer.lr, 0.02)  # a good one goes through
    assert K.get_value(optimizer.lr) == np.float32(0.02)


@pytest.mark.parametrize('make, name', [
    (lambda: kol.Adam(0.01), 'v/dense_1/kernel'),
    (lambda: kol.RMSprop(), 'accumulator/dense_1/kernel'),
    (lambda: kol.GradientAccumulation(kol.Adamax(), 2), 'inner/u/dense_1/kernel'),
    (lambda: kol.Lookahead(keras.optimizers.Adagrad()), 'inner/accumulator/dense_1/kernel')])
def test_negative_second_moments_are_refused(tmp_path, make, name):
    """#6: negative second moments loaded (then sqrt(v) is NaN)."""
    model = trained(make())
    weights = model.optimizer.get_weights()
    index = model.optimizer.weight_names.index(name)
    bad = list(weights)
    bad[index] = -np.ones_like(weights[index])
    with pytest.raises(ValueError, match='cannot be negative'):
        model.optimizer.set_weights(bad)
    path = str(tmp_path / 'm.h5')
    kol.save_model(model, path)
    with h5py.File(path, 'r+') as f:
        group = f['optimizer_weights']
        key = group.attrs['weight_names'][index]
        group[key.decode('utf8') if isinstance(key, bytes) else key][...] = -1.
    with pytest.raises(ValueError, match='cannot be negative'):
        kol.load_optimizer_state(model, path)
    for w, v in zip(weights, model.optimizer.get_weights()):
        np.testing.assert_array_equal(w, v)


def test_signed_state_may_be_negative():
    model = trained(kol.GradientAccumulation(kol.Ftrl(0.5), 2), steps=1)
    weights = model.optimizer.get_weights()
    names = model.optimizer.weight_names
    signed = [names.index('accumulator/dense_1/kernel'), names.index('inner/linear/dense_1/kernel')]
    for i in signed:
        weights[i] = -np.ones_like(weights[i])
    model.optimizer.set_weights(weights)


def test_untrusted_checkpoints_load_as_data_only(tmp_path):
    """#8: kol.load_model, Checkpoint.load_latest and distributed.load_latest run the code a
    Lambda layer stored in the file; with `model=` (the architecture from your code) they don't."""
    marker = str(tmp_path / 'the-file-ran-code')

    def build():
        trap = eval("lambda x: (open(%r, 'w').close(), x)[1]" % marker)  # runs when called
        model = keras.models.Sequential([keras.layers.Dense(4, input_shape=(5,)),
                                         keras.layers.Lambda(trap), keras.layers.Dense(1)])
        model.compile(kol.Adam(0.01), 'mse')
        return model
    directory = str(tmp_path / 'checkpoints')
    model = build()
    model.fit(X, Y, batch_size=16, epochs=2, shuffle=False, verbose=0,
              callbacks=[Checkpoint(directory)])
    mine = build()  # your own code builds the architecture (and calls its Lambda)
    os.remove(marker)
    loaded, epoch = Checkpoint.load_latest(directory, model=mine)
    assert loaded is mine and epoch == 2 and not os.path.exists(marker)
    np.testing.assert_array_equal(problems.flat(mine.get_weights()),
                                  problems.flat(model.get_weights()))
    for got, want in zip(mine.optimizer.get_weights(), model.optimizer.get_weights()):
        np.testing.assert_array_equal(got, want)
    Checkpoint.load_latest(directory)  # the documented other route runs the file's code
    assert os.path.exists(marker)


def test_load_weights_refuses_links_in_the_model_weights(tmp_path):
    secret = str(tmp_path / 'secret.h5')
    path = str(tmp_path / 'm.h5')
    model = trained()
    kol.save_model(model, path)
    with h5py.File(path, 'r+') as f:
        layer = f['model_weights'][list(f['model_weights'].keys())[0]]
        inner = layer[list(layer.keys())[0]]
        name = list(inner.keys())[0]
        with h5py.File(secret, 'w') as s:
            s['data'] = inner[name][()] + 42.
        del inner[name]
        inner[name] = h5py.ExternalLink(secret, 'data')
    before = model.get_weights()
    with pytest.raises(ValueError, match='ExternalLink'):
        kol.load_weights(model, path)
    for b, w in zip(before, model.get_weights()):
        np.testing.assert_array_equal(b, w)


def test_yaml_round_trip():
    """#22: the lock pinned PyYAML 6, with which Keras 2.2's model_from_yaml fails."""
    model = problems.compiled(kol.Adam())
    again = keras.models.model_from_yaml(model.to_yaml())
    assert [layer.get_config() for layer in again.layers] == \
        [layer.get_config() for layer in model.layers]


class UnusedWeight(keras.layers.Layer):
    """Passes its input through; its weight has no gradient."""

    def build(self, input_shape):
        self.unused = self.add_weight('unused_kernel', (1,), initializer='ones')
        super(UnusedWeight, self).build(input_shape)

    def call(self, x):
        return x


def test_a_missing_gradient_names_the_parameter():
    """#20: the None-gradient error did not name the variable it had at hand."""
    model = keras.models.Sequential([keras.layers.Dense(1, input_shape=(5,)), UnusedWeight()])
    model.compile(kol.Adam(), 'mse')
    with pytest.raises(ValueError, match='unused_kernel'):
        model.train_on_batch(X, Y)
