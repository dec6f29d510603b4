"""The supported range: every keras 2.2.4-2.3.x on TensorFlow 1.13-1.15 imports; Keras 2.4+
(tf.keras), TensorFlow 2 and tf.keras objects get an error naming what is supported."""
import os
import subprocess
import sys

import pytest
import tensorflow as tf

import keras_opt_legacy as kol
from keras_opt_legacy import compat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('keras_version', [(2, 2, 4), (2, 2, 5), (2, 3, 0), (2, 3, 1)])
@pytest.mark.parametrize('tf_version', [(1, 13, 1), (1, 14, 0), (1, 15, 5)])
def test_the_supported_range_passes(keras_version, tf_version):
    compat.check_versions(keras_version, tf_version)


@pytest.mark.parametrize('versions, found', [
    (dict(keras_version=(2, 4, 3)), 'keras 2.4.3'), (dict(keras_version=(2, 2, 2)), 'keras 2.2.2'),
    (dict(keras_version=(3, 0, 0)), 'keras 3.0.0'),
    (dict(tf_version=(2, 0, 0)), 'tensorflow 2.0.0'), (dict(tf_version=(1, 12, 0)), 'tensorflow 1.12.0')])
def test_outside_the_range_an_import_error_names_it(versions, found):
    with pytest.raises(ImportError) as error:
        compat.check_versions(**versions)
    assert found in str(error.value) and compat.SUPPORTED in str(error.value)


@pytest.mark.parametrize('package, version', [('tensorflow', '2.4.0'), ('keras', '2.4.3')])
def test_importing_under_an_unsupported_stack_fails_clearly(tmp_path, package, version):
    """A stand-in package with that version, found first on the path: TensorFlow is checked
    before Keras is imported (Keras 2.2/2.3 itself fails obscurely under TF 2)."""
    (tmp_path / package).mkdir()
    (tmp_path / package / '__init__.py').write_text('__version__ = %r\n' % version)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), ROOT]))
    run = subprocess.run([sys.executable, '-c', 'import keras_opt_legacy'], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    assert run.returncode != 0
    last = run.stdout.strip().splitlines()[-1]
    assert last.startswith('ImportError') and compat.SUPPORTED in last, run.stdout
    assert '%s %s' % (package, version) in last


def test_tf_keras_optimizers_and_models_are_refused_clearly():
    for make in (lambda: tf.keras.optimizers.Adam(), lambda: tf.train.AdamOptimizer()):
        with pytest.raises(TypeError, match='standalone Keras'):
            kol.GradientAccumulation(make(), 2)
    model = tf.keras.models.Sequential([tf.keras.layers.Dense(1, input_shape=(3,))])
    model.compile(tf.keras.optimizers.SGD(), 'mse')
    for call in (lambda: kol.save_model(model, 'unused.h5'),
                 lambda: kol.load_optimizer_state(model, 'unused.h5'),
                 lambda: kol.reset_optimizer(model.optimizer),
                 lambda: kol.Heun().inject(model)):
        with pytest.raises(TypeError, match='standalone Keras'):
            call()
