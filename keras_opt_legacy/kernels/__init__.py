"""keras_opt_legacy's training kernels: one TensorFlow op per rule that TensorFlow has no kernel
for, each updating a variable and its slots in place in one pass over the elements (C++,
Eigen, TF's CPU thread pool; see kol_kernels.h). The arithmetic is the rule's formula in the
same order, so results equal the formula graph to float rounding (bitwise where the operations
are the same); scalars that depend on the iteration are inputs, computed in the graph.

The rules use them on their default path (`fused=True`; each `_fused` tries its op first,
through `ops.kernel_or`, and falls back on TF's kernels or its in-place graph where the op is
None): SGD with momentum (`keras_momentum`), RMSprop (`keras_rms_prop`), Nadam, Adam(amsgrad=
True) (`adam_amsgrad`), RAdam, AdaBound/AMSBound, Yogi (`yogi_no_momentum` with beta_1 = 0),
AdaBelief (`ada_belief_rectified` with rectify=True), Lion, LAMB (`lamb_moments` then
`lamb_update`), LARS (`norms` then `lars_momentum`), Adafactor (a factored parameter:
`adafactor_factored_moments`, `adafactor_factored_rms` when it clips, `adafactor_factored`; a
full v: `adafactor_moments`, `adafactor`); the decoupled decay in place (`decay`: WeightDecay,
SGDW, NadamW, AdamW), AdamW's decay with Adam's step in one pass (`adam_w`, where that is
bitwise the decay pass then ApplyAdam) and the weight averages (`ema`). Plain SGD, Adam, Adamax,
Adagrad, Adadelta and Ftrl keep TensorFlow's own kernels.

- `library()`: the loaded op module, or None (then each rule takes its path without it);
- `why_not()`: why `library()` is None (None when it is not);
- `ops()`: the ops, each picking the ref form (`KolApplyX`: Keras 2.2's tf.Variable) or the
  resource form (`KolResourceApplyX`: Keras 2.3) from its variables, or returning None where it
  cannot be used (library missing, variables of mixed kinds, on a GPU, of a dtype other than
  float16/32/64) -- as `compat.fused_kernels()` does for TF's own kernels;
  `ops().accepts(name, *variables)` says so before anything is built.

The library is built by `python -m keras_opt_legacy.kernels.build` (`make kernels`) into a cache
keyed by TensorFlow version, Python version and sources (see build.py); when it is not there and
a C++ compiler is, the first `library()` builds it (one log line). Each reason not to use the
library is logged once (logger 'keras_opt_legacy.kernels'), with what runs instead (WITHOUT):
each rule's path without it -- TensorFlow's kernels or in-place ops where the rule has them
(`fused=True`), else its formula graph. KERAS_OPT_LEGACY_KERNELS=0 in
the environment disables the library (checked at every call).
"""
import glob
import logging
import os
import threading

import numpy as np
import tensorflow as tf

from tensorflow.python.framework import ops as tf_ops

ENV = 'KERAS_OPT_LEGACY_KERNELS'
log = logging.getLogger('keras_opt_legacy.kernels')

_lock = threading.RLock()
_state = {'tried': False, 'module': None, 'reason': None, 'functions': {}, 'incompatible': False}
_logged = set()
FLOAT_TYPES = (tf.float16, tf.float32, tf.float64)
# What runs where the library is not used: the package's path before it (issue 20).
WITHOUT = ("the rules take their path without the library (TensorFlow's kernels or in-place ops "
           "where they have them, else their formula graph)")


def _log_once(level, message):
    if message not in _logged:
        _logged.add(message)
        log.log(level, message)


def disabled():
    """Whether KERAS_OPT_LEGACY_KERNELS=0 (or false/no/off) disables the library."""
    return os.environ.get(ENV, '').strip().lower() in ('0', 'false', 'no', 'off')


def library():
    """The loaded op module, or None: disabled, not built and no compiler to build it, the
    build failed, or it does not load. The reason is logged once and given by `why_not()`."""
    if disabled():
        _log_once(logging.INFO, 'keras_opt_legacy kernels: disabled (%s=0); %s' % (ENV, WITHOUT))
        return None
    with _lock:
        if not _state['tried']:
            _state['tried'] = True
            _state['module'], _state['reason'] = _load()
            if _state['reason']:
                _log_once(logging.WARNING, 'keras_opt_legacy kernels: %s; %s'
                          % (_state['reason'], WITHOUT))
        return _state['module']


def why_not():
    """Why `library()` returns None, or None if it returns the library."""
    if disabled():
        return 'disabled (%s=0)' % ENV
    library()
    return _state['reason']


def incompatible():
    """Whether the library cannot be used with this TensorFlow at all (a known limitation, e.g.
    a TensorFlow built with GCC 4), as opposed to missing or broken."""
    library()
    return not disabled() and _state['incompatible']


def _load():
    """(module, None) or (None, reason)."""
    from . import build as _build  # imported here: `python -m ...kernels.build` runs it as main
    try:
        path = _build.library_path()
    except Exception as error:  # noqa: BLE001 -- unreadable sources, odd TF: say why
        return None, 'cannot locate the library (%s)' % error
    unusable = os.path.join(os.path.dirname(path), _build.UNUSABLE)
    if not os.path.exists(path) and os.path.exists(unusable):
        with open(unusable) as f:
            _state['incompatible'] = True
            return None, f.read().strip()
    if not os.path.exists(path):
        if not any(name.endswith('.cc') for name in _build.sources()):
            return None, ('not built for TensorFlow %s / this Python (%s is missing), and the C++ '
                          'sources are not installed with the package to build it'
                          % (tf.__version__, path))
        if _build.compiler() is None:
            return None, ('not built for TensorFlow %s / this Python (%s is missing) and no C++ '
                          'compiler (%s) to build it; build it where one is with `python -m '
                          'keras_opt_legacy.kernels.build`'
                          % (tf.__version__, path, os.environ.get('CXX') or 'g++'))
        try:
            _build.build(log=lambda message: _log_once(logging.WARNING,
                                                       'keras_opt_legacy kernels: ' + message))
        except _build.Incompatible as error:
            _state['incompatible'] = True
            return None, str(error)
        except Exception as error:  # noqa: BLE001 -- a failed build falls back, it says why
            return None, 'building the library failed: %s' % str(error).splitlines()[0]
    try:
        module = tf.load_op_library(path)
    except Exception as error:  # noqa: BLE001 -- any load failure falls back
        return None, 'the library %s failed to load (%s)' % (path, str(error).strip())
    for op in module.OP_LIST.op:  # the updates have no gradient
        try:
            tf_ops.NotDifferentiable(op.name)
        except KeyError:  # registered by an earlier load
            pass
    return module, None


def _reset():
    """Forget the loaded library and the logged reasons (for tests)."""
    with _lock:
        _state.update(tried=False, module=None, reason=None, functions={}, incompatible=False)
        _logged.clear()


# ---- the ops -------------------------------------------------------------------------------

_GPU = []


def _gpu_present():
    """Whether TensorFlow may place an unpinned variable on a GPU: built with CUDA, a GPU device
    node exists, and CUDA_VISIBLE_DEVICES does not hide them all (no device is created)."""
    if not _GPU:
        visible = os.environ.get('CUDA_VISIBLE_DEVICES')
        _GPU.append(tf.test.is_built_with_cuda() and bool(glob.glob('/dev/nvidia[0-9]*')) and
                    (visible is None or visible.strip() not in ('', '-1')))
    return _GPU[0]


def _on_gpu(x):
    device = (getattr(x, 'device', None) or '').upper()
    if 'GPU' in device:
        return True
    return not device and _gpu_present()


def _is_resource(v):
    from tensorflow.python.ops.resource_variable_ops import is_resource_variable
    return is_resource_variable(v)


def _convert(x, dtype):
    """`x` as a tensor of `dtype` (tensors and variables of another float type are cast)."""
    if isinstance(x, (tf.Tensor, tf.Variable)) or hasattr(x, '_as_graph_element') or \
            hasattr(x, 'op'):
        x = tf.convert_to_tensor(x)
        return x if x.dtype.base_dtype == dtype else tf.cast(x, dtype)
    return tf.convert_to_tensor(np.asarray(x, dtype=dtype.as_numpy_dtype))


class Kernels(object):
    """The ops, by rule. Arguments in each op's input order: the variables (tf.Variable, ref or
    resource), then scalars (numbers or scalar tensors, converted/cast to the variables' dtype),
    the gradient, and attributes. Each returns what TF's fused kernels return (a ref op: its
    `out` tensor; a resource op: the operation; ops with outputs: the outputs), or None: use the
    rule's path without the library. See the C++ sources for each op's arithmetic, in order."""

    # -- Keras-era rules (keras_rules.cc)
    def keras_momentum(self, var, accum, lr, grad, momentum, use_nesterov=False,
                       use_locking=False):
        """v = momentum*m - lr*g; m <- v; p <- p + v (Nesterov: (p + momentum*v) - lr*g)."""
        return self._apply('KerasMomentum', [var, accum], [lr, grad, momentum],
                           use_nesterov=use_nesterov, use_locking=use_locking)

    def keras_rms_prop(self, var, ms, lr, rho, epsilon, grad, use_locking=False):
        """a <- rho*a + (1-rho)*g^2; p <- p - lr*g/(sqrt(a) + eps)."""
        return self._apply('KerasRMSProp', [var, ms], [lr, rho, epsilon, grad],
                           use_locking=use_locking)

    keras_rmsprop = keras_rms_prop

    def nadam(self, var, m, v, momentum_cache_t, momentum_cache_t_1, m_schedule_new,
              m_schedule_next, beta_2_power, lr, beta_1, beta_2, epsilon, grad,
              use_locking=False):
        """Nadam._apply/_step with its step values (beta_2_power = beta_2^t)."""
        return self._apply('Nadam', [var, m, v],
                           [momentum_cache_t, momentum_cache_t_1, m_schedule_new,
                            m_schedule_next, beta_2_power, lr, beta_1, beta_2, epsilon, grad],
                           use_locking=use_locking)

    def adam_amsgrad(self, var, m, v, vhat, lr_t, beta_1, beta_2, epsilon, grad,
                     use_locking=False):
        """Adam(amsgrad=True)._apply: m, v; vhat <- max(vhat, v); p -= lr_t*m/(sqrt(vhat)+eps)."""
        return self._apply('AdamAmsgrad', [var, m, v, vhat], [lr_t, beta_1, beta_2, epsilon, grad],
                           use_locking=use_locking)

    # -- the rules of keras_opt_legacy.rules (adam_variants.cc, norms_and_decay.cc)
    def radam(self, var, m, v, adaptive_rate, momentum_rate, rectified, beta_1, beta_2, epsilon,
              grad, use_locking=False):
        """m, v; p -= rectified ? adaptive_rate*m/(sqrt(v)+eps) : momentum_rate*m."""
        return self._apply('RAdam', [var, m, v], [adaptive_rate, momentum_rate, rectified,
                                                  beta_1, beta_2, epsilon, grad],
                           use_locking=use_locking)

    def ada_bound(self, var, m, v, lr_t, lower, upper, beta_1, beta_2, epsilon, grad,
                  use_locking=False):
        """m, v; p -= clip(lr_t/(sqrt(v)+eps), lower, upper) * m."""
        return self._apply('AdaBound', [var, m, v], [lr_t, lower, upper, beta_1, beta_2,
                                                     epsilon, grad], use_locking=use_locking)

    def ams_bound(self, var, m, v, vhat, lr_t, lower, upper, beta_1, beta_2, epsilon, grad,
                  use_locking=False):
        """AdaBound with vhat <- max(vhat, v) in the step size."""
        return self._apply('AmsBound', [var, m, v, vhat], [lr_t, lower, upper, beta_1, beta_2,
                                                           epsilon, grad], use_locking=use_locking)

    def yogi(self, var, m, v, lr_t, beta_1, beta_2, epsilon, grad, use_locking=False):
        """v -= ((1-b2)*sign(v-g^2))*g^2; m; p -= lr_t*m/(sqrt(v)+eps)."""
        return self._apply('Yogi', [var, m, v], [lr_t, beta_1, beta_2, epsilon, grad],
                           use_locking=use_locking)

    def yogi_no_momentum(self, var, v, lr_t, beta_2, epsilon, grad, use_locking=False):
        """Yogi with beta_1 = 0 (no m slot): p -= lr_t*g/(sqrt(v)+eps)."""
        return self._apply('YogiNoMomentum', [var, v], [lr_t, beta_2, epsilon, grad],
                           use_locking=use_locking)

    def ada_belief(self, var, m, s, momentum_rate, bias_correction_2, beta_1, beta_2, epsilon,
                   grad, use_locking=False):
        """m; s <- (b2*s + (1-b2)*(g-m)^2) + eps; p -= momentum_rate*m/(sqrt(s)/bc2 + eps),
        bias_correction_2 = sqrt(1 - b2^t)."""
        return self._apply('AdaBelief', [var, m, s], [momentum_rate, bias_correction_2, beta_1,
                                                      beta_2, epsilon, grad],
                           use_locking=use_locking)

    def ada_belief_rectified(self, var, m, s, adaptive_rate, momentum_rate, rectified, beta_1,
                             beta_2, epsilon, grad, use_locking=False):
        """AdaBelief(rectify=True): m, s; RAdam's choice of step."""
        return self._apply('AdaBeliefRectified', [var, m, s],
                           [adaptive_rate, momentum_rate, rectified, beta_1, beta_2, epsilon,
                            grad], use_locking=use_locking)

    def lion(self, var, m, lr, beta_1, one_minus_beta_1, beta_2, one_minus_beta_2,
             weight_decay, grad, use_locking=False):
        """p -= lr*(sign(b1*m + (1-b1)*g) [+ wd*p when wd > 0]); m <- b2*m + (1-b2)*g. Pass
        the complements as the formula computes them (Lion: `1. - beta` in Python)."""
        return self._apply('Lion', [var, m], [lr, beta_1, one_minus_beta_1, beta_2,
                                              one_minus_beta_2, weight_decay, grad],
                           use_locking=use_locking)

    def lamb_moments(self, var, m, v, beta_1_power, beta_2_power, beta_1, beta_2, epsilon,
                     weight_decay, grad, use_locking=False):
        """LAMB pass 1: m, v written; returns (||p||, ||r||, r) with r the formula's
        (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps) [+ wd*p] (or None)."""
        return self._apply('LambMoments', [var, m, v], [beta_1_power, beta_2_power, beta_1,
                                                        beta_2, epsilon, weight_decay, grad],
                           use_locking=use_locking)

    def lamb_update(self, var, lr, ratio, update, use_locking=False):
        """LAMB pass 2: p -= (lr*ratio)*update, `update` the r of `lamb_moments`."""
        return self._apply('LambUpdate', [var], [lr, ratio, update], use_locking=use_locking)

    def lars_momentum(self, var, accum, lr, grad, momentum, weight_decay, use_nesterov=False,
                      use_locking=False):
        """scaled = (g [+ wd*p]) * lr; accum <- accum*momentum + scaled; p -= accum
        (Nesterov: p -= scaled + accum*momentum)."""
        return self._apply('LarsMomentum', [var, accum], [lr, grad, momentum, weight_decay],
                           use_nesterov=use_nesterov, use_locking=use_locking)

    def norms(self, x, y):
        """(||x||, ||y||) in one pass (a deterministic sum), or None."""
        return self._compute('KolNorms', x, y)

    # -- Adafactor (adafactor.cc): a factored parameter's three passes, a full v's two
    def adafactor_factored_moments(self, var, vr, vc, decay, grad, parameter_scale=True,
                                   use_locking=False):
        """vr <- d*vr + (1-d)*mean(g^2 + 1e-30, -1), vc <- d*vc + (1-d)*mean(g^2 + 1e-30, -2);
        returns RMS(p) (0 without `parameter_scale`), or None."""
        return self._apply('AdafactorFactoredMoments', [var, vr, vc], [decay, grad],
                           parameter_scale=parameter_scale, use_locking=use_locking)

    def adafactor_factored_rms(self, grad, row_factor, col_factor):
        """RMS((g*r)*c) with r [..., n], c [..., m] broadcast over g [..., n, m], or None."""
        return self._compute('KolAdafactorFactoredRms', grad, row_factor, col_factor)

    def adafactor_factored(self, var, m, row_factor, col_factor, scale, divisor, beta_1,
                           one_minus_beta_1, grad, use_locking=False):
        """u = (((g*r)*c)/divisor)*scale; p -= u, or (m not None) m <- b1*m + u*(1-b1),
        p -= m."""
        if m is None:
            return self._apply('AdafactorFactored', [var],
                               [row_factor, col_factor, scale, divisor, grad],
                               use_locking=use_locking)
        return self._apply('AdafactorFactoredMomentum', [var, m],
                           [row_factor, col_factor, scale, divisor, beta_1, one_minus_beta_1,
                            grad], use_locking=use_locking)

    def adafactor_moments(self, var, v, decay, grad, parameter_scale=True, use_locking=False):
        """v <- d*v + (1-d)*(g^2 + 1e-30); returns (RMS(g*rsqrt(v)), RMS(p)) (RMS(p) 0 without
        `parameter_scale`), or None."""
        return self._apply('AdafactorMoments', [var, v], [decay, grad],
                           parameter_scale=parameter_scale, use_locking=use_locking)

    def adafactor(self, var, m, v, scale, divisor, beta_1, one_minus_beta_1, grad,
                  use_locking=False):
        """u = ((g*rsqrt(v))/divisor)*scale (v only read); p -= u, or (m not None)
        m <- b1*m + u*(1-b1), p -= m."""
        if m is None:
            return self._apply('Adafactor', [var, v], [scale, divisor, grad],
                               use_locking=use_locking)
        return self._apply('AdafactorMomentum', [var, m, v],
                           [scale, divisor, beta_1, one_minus_beta_1, grad],
                           use_locking=use_locking)

    # -- weight averaging and decoupled weight decay
    def ema(self, var, decay, value, use_locking=False):
        """avg <- avg*decay + value*(1-decay)."""
        return self._apply('Ema', [var], [decay, value], use_locking=use_locking)

    def decay(self, var, coefficient, use_locking=False):
        """p <- p - p*coefficient."""
        return self._apply('Decay', [var], [coefficient], use_locking=use_locking)

    def adam_w(self, var, m, v, beta1_power, beta2_power, lr, beta1, beta2, epsilon, grad,
               coefficient, use_locking=False):
        """p <- p - p*coefficient, then ApplyAdam's step, in one pass."""
        return self._apply('AdamW', [var, m, v], [beta1_power, beta2_power, lr, beta1, beta2,
                                                  epsilon, grad, coefficient],
                           use_locking=use_locking)

    # -- plumbing
    @staticmethod
    def _function(lib, op_name):
        """The module's Python function of the op `op_name` (TF's snake_case of it)."""
        functions = _state['functions']
        if not functions:
            for attr in dir(lib):
                if attr.startswith('kol_') and not attr.endswith('_eager_fallback'):
                    functions[attr.replace('_', '')] = getattr(lib, attr)
        return functions[op_name.lower()]

    def _compute(self, op_name, x, *others):
        """The outputs of the op `op_name` of tensors `x` and `others` (no variables: they are
        cast to `x`'s dtype), or None."""
        lib = library()
        if lib is None:
            return None
        x = tf.convert_to_tensor(x)
        dtype = x.dtype.base_dtype
        if dtype not in FLOAT_TYPES:
            return None
        others = [_convert(y, dtype) for y in others]
        if any(_on_gpu(y) for y in [x] + others):
            _log_once(logging.WARNING, 'keras_opt_legacy kernels: %s is on a GPU (the kernels '
                                       'are CPU only); %s' % (x.name, WITHOUT))
            return None
        return self._function(lib, op_name)(x, *others)

    def accepts(self, name, *variables):
        """Whether the op `name` ('AdamW', ...) would update `variables` (see `_usable`), without
        building anything: for a caller that must decide before it builds the op."""
        return library() is not None and self._usable(name, variables)

    @staticmethod
    def _usable(name, variables):
        """Whether the op `name` can update `variables`: one kind (ref or resource), not on a
        GPU, one float dtype; the reason it cannot is logged once."""
        kinds = set(_is_resource(v) for v in variables)
        names = ', '.join(getattr(v, 'name', '?') for v in variables)
        if len(kinds) != 1:
            _log_once(logging.INFO, 'keras_opt_legacy kernels: %s mixes ref and resource '
                                    'variables (%s); %s' % (name, names, WITHOUT))
            return False
        if any(_on_gpu(v) for v in variables):
            _log_once(logging.WARNING, 'keras_opt_legacy kernels: %s is on a GPU or may be (the '
                                       'kernels are CPU only); %s' % (names, WITHOUT))
            return False
        dtype = variables[0].dtype.base_dtype
        if dtype not in FLOAT_TYPES or any(v.dtype.base_dtype != dtype for v in variables):
            _log_once(logging.INFO, 'keras_opt_legacy kernels: no %s kernel for %s (%s); %s'
                      % (name, ', '.join(sorted(set(v.dtype.base_dtype.name for v in variables))),
                         names, WITHOUT))
            return False
        return True

    def _apply(self, name, variables, inputs, **attrs):
        lib = library()
        if lib is None or not self._usable(name, variables):
            return None
        dtype = variables[0].dtype.base_dtype
        resource = _is_resource(variables[0])
        op_name = ('KolResourceApply' if resource else 'KolApply') + name
        op_def = next(op for op in lib.OP_LIST.op if op.name == op_name)
        converted = []
        for arg, x in zip(op_def.input_arg[len(variables):], inputs):
            converted.append(_convert(x, tf.bool) if arg.type == tf.bool.as_datatype_enum
                             else _convert(x, dtype))
        handles = [v.handle for v in variables] if resource else list(variables)
        return self._function(lib, op_name)(*(handles + converted), **attrs)


_KERNELS = Kernels()


def ops():
    """The `Kernels` (always an object; each op returns None when it cannot be used)."""
    return _KERNELS
