"""keras_opt_legacy: optimizers for graph-mode TensorFlow 1.x + standalone Keras 2.2.4-2.3.1."""
from . import compat  # noqa: F401 (first: it checks the installed versions)

from . import checks, ops
from .base import Optimizer, PreparedStep, custom_objects, register
from .builtin import current_learning_rate
from .optimizers import (SGD, RMSprop, Adagrad, Adadelta, AdamBase, Adam, Adamax, Nadam,
                         Ftrl, DecoupledWeightDecay, AdamW, SGDW, NadamW)
from .rules import RAdam, LAMB, LARS, Adafactor, AdaBound, Yogi, AdaBelief, Lion

from .wrappers import (Wrapper, GradientAccumulation, Lookahead, SkipNonFinite, WeightDecay,
                       LearningRateMultipliers, layer_wise_decay)
from .averaging import ExponentialMovingAverage, StochasticWeightAveraging, update_batch_norm
from .runge_kutta import (InjectOptimizer, RungeKutta, AdaptiveRungeKutta,
                          Heun, Midpoint, RK4, RK23, RK45)
from .state import (load_model, load_optimizer_state, load_weights, reset_optimizer,
                    save_model)
from . import callbacks
from . import schedules

__version__ = '0.1.0'
__all__ = ['Optimizer', 'AdamBase', 'Wrapper', 'PreparedStep', 'register', 'checks', 'ops',
           'current_learning_rate', 'custom_objects', 'schedules',
           'SGD', 'RMSprop', 'Adagrad', 'Adadelta', 'Adam', 'Adamax', 'Nadam', 'Ftrl',
           'DecoupledWeightDecay', 'AdamW', 'SGDW', 'NadamW', 'RAdam', 'LAMB', 'LARS', 'Adafactor',
           'AdaBound', 'Yogi', 'AdaBelief', 'Lion',
           'GradientAccumulation', 'Lookahead', 'SkipNonFinite', 'WeightDecay',
           'LearningRateMultipliers', 'layer_wise_decay', 'ExponentialMovingAverage',
           'StochasticWeightAveraging', 'update_batch_norm', 'callbacks', 'load_model',
           'load_optimizer_state', 'load_weights', 'reset_optimizer', 'save_model', 'InjectOptimizer',
           'RungeKutta', 'AdaptiveRungeKutta', 'Heun', 'Midpoint', 'RK4', 'RK23', 'RK45']
