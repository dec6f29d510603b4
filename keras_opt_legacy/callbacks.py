"""Crash-safe checkpoints of the model and its optimizer state."""
import math
import os
import re
import warnings

import h5py
import keras

from . import checks
from .state import load_model, load_optimizer_state, load_weights, save_model

_NAME = re.compile(r'^checkpoint-(\d{8,})\.h5$')  # %08d grows past 10^8 batches
_TEMPORARY = re.compile(r'^\.checkpoint-\d{8,}\.h5\.(\d+)\.tmp$')  # pid of its writer
EPOCH = 'keras_opt_legacy_epoch'  # completed epochs when the checkpoint was written
BATCH = 'keras_opt_legacy_batch'  # batches of the next epoch already trained (mid-epoch saves)


class Checkpoint(keras.callbacks.Callback):
    """Save the model with its optimizer state atomically at the end of every epoch (or every
    `every_batches` batches), keeping the newest `keep` checkpoints.

    Each save writes a temporary file in the same directory, flushes and fsyncs it, then renames
    it into place (and fsyncs the directory): a crash mid-save leaves the previous checkpoints
    intact and at most a temporary file, which is never loaded and is removed by the next
    Checkpoint on that directory (a failed save removes its own). The directory must be writable:
    that is tried at construction. Resume with `model, epoch = Checkpoint.load_latest(directory)`
    and `model.fit(..., initial_epoch=epoch)`; if the newest checkpoint cannot be read, the next
    older one is loaded, with a warning.

    With `every_batches`, a save on an epoch's last batch counts that epoch as completed; a save
    in the middle of an epoch records the completed epochs and the number of batches of the next
    one already trained (`Checkpoint.load(path, with_batch=True)`): resuming with
    `initial_epoch=epoch` re-trains those batches, unless the data skips them.
    """

    def __init__(self, directory, keep=3, every_batches=None):
        super(Checkpoint, self).__init__()
        keep = checks.positive_integer('keep', keep)
        if every_batches is not None:
            every_batches = checks.positive_integer('every_batches', every_batches)
        self.directory, self.keep, self.every_batches = directory, keep, every_batches
        os.makedirs(directory, exist_ok=True)
        _check_writable(directory)
        _remove_stale_temporaries(directory)
        latest = self.latest(directory)
        self._batches = self._number(latest) if latest else 0
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None):
        self._batches += 1
        if self.every_batches and self._batches % self.every_batches == 0:
            if batch + 1 == self._steps_per_epoch():
                self.save(epoch=self._epoch + 1)
            else:
                self.save(epoch=self._epoch, batch=batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        if not self.every_batches:
            self.save(epoch=epoch + 1)

    def _steps_per_epoch(self):
        """Batches per epoch as Keras's fit/fit_generator state them, or None."""
        params = self.params or {}
        if params.get('steps'):
            return params['steps']
        if params.get('samples') and params.get('batch_size'):
            return int(math.ceil(params['samples'] / float(params['batch_size'])))
        return None

    def save(self, epoch, batch=0):
        """Write checkpoint number `batches seen so far`; `epoch` = completed epochs, `batch` =
        batches of the next epoch already trained."""
        path = os.path.join(self.directory, 'checkpoint-%08d.h5' % self._batches)
        temporary = os.path.join(self.directory, '.%s.%d.tmp' % (os.path.basename(path),
                                                                os.getpid()))
        try:
            save_model(self.model, temporary)
            with h5py.File(temporary, 'r+') as f:
                f.attrs[EPOCH] = epoch
                f.attrs[BATCH] = batch
            _fsync(temporary)
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):  # e.g. the disk is full: leave nothing behind
                os.remove(temporary)
            raise
        _fsync(self.directory)
        for old in self.checkpoints(self.directory)[:-self.keep]:
            os.remove(old)
        return path

    @staticmethod
    def _number(path):
        return int(_NAME.match(os.path.basename(path)).group(1))

    @classmethod
    def checkpoints(cls, directory):
        """Complete checkpoints in `directory`, oldest first (by number)."""
        if not os.path.isdir(directory):
            return []
        paths = [os.path.join(directory, n) for n in os.listdir(directory) if _NAME.match(n)]
        return sorted(paths, key=cls._number)

    @classmethod
    def latest(cls, directory):
        found = cls.checkpoints(directory)
        return found[-1] if found else None

    @classmethod
    def load_latest(cls, directory, custom_objects=None, model=None):
        """`(model, completed epochs)` from the newest checkpoint that loads, or `(None, 0)` if
        there is none. A damaged newest checkpoint is skipped with a warning; if none loads, the
        newest one's error is raised.

        Without `model`, loads with `keras_opt_legacy.load_model`, which rebuilds the
        architecture from the file: the code of any `Lambda` layer in it runs. With `model` (the
        same architecture, built and compiled by your code), only data is read into it:
        `load_weights` + `load_optimizer_state` -- the route for files you do not trust."""
        found = cls.checkpoints(directory)
        first_error = None
        for path in reversed(found):
            try:
                return cls.load(path, custom_objects, model=model)
            except (OSError, ValueError, KeyError) as error:
                first_error = first_error or error
                warnings.warn('checkpoint %s cannot be loaded (%s): trying an older one'
                              % (path, error))
        if first_error is not None:
            raise first_error
        return None, 0

    @staticmethod
    def load(path, custom_objects=None, with_batch=False, model=None):
        """`(model, completed epochs)` from the checkpoint `path`; with `with_batch`, also the
        batches of the next epoch it had trained (0 for a save at an epoch's end). `model`: as
        in `load_latest`."""
        with h5py.File(path, 'r') as f:
            if EPOCH not in f.attrs:
                raise ValueError('%s is not a keras_opt_legacy checkpoint (no %s attribute)'
                                 % (path, EPOCH))
            epoch, batch = int(f.attrs[EPOCH]), int(f.attrs.get(BATCH, 0))
        if model is None:
            model = load_model(path, custom_objects=custom_objects)
        else:
            load_weights(model, path)
            load_optimizer_state(model, path)
        return (model, epoch, batch) if with_batch else (model, epoch)


def _check_writable(directory):
    """Raise a clear error now if `directory` does not take files (not after an epoch)."""
    probe = os.path.join(directory, '.keras_opt_legacy-write-test.%d' % os.getpid())
    try:
        with open(probe, 'w'):
            pass
        os.remove(probe)
    except OSError as error:
        raise OSError('the checkpoint directory %s is not writable: %s' % (directory, error))


def _remove_stale_temporaries(directory):
    """Remove temporary files left by saves whose process is gone (killed mid-save)."""
    for name in os.listdir(directory):
        match = _TEMPORARY.match(name)
        if match and not _running(int(match.group(1))):
            os.remove(os.path.join(directory, name))


def _running(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AveragedEvaluation(keras.callbacks.Callback):
    """At the end of every epoch, evaluate the model on `validation_data` with the averaged
    weights of its ExponentialMovingAverage or StochasticWeightAveraging (found in the
    optimizer, wrapped or not) and report the results as 'avg_val_loss', 'avg_val_<metric>' in
    the logs (so History, ModelCheckpoint, EarlyStopping listed after it see them); training
    goes on with the raw weights, restored exactly.

    `batch_norm_data` (inputs, as for `update_batch_norm`): recompute the BatchNorm statistics
    of the averaged weights on it first (undone with the weights). `filepath` (formatted with
    `epoch` and the logs, as ModelCheckpoint's): save the model with the averaged weights
    (`save_model`, optimizer state included), every epoch or, with `save_best_only`, when
    `monitor` improves (`mode` 'min' or 'max')."""

    def __init__(self, validation_data, batch_size=32, batch_norm_data=None, filepath=None,
                 save_best_only=False, monitor='avg_val_loss', mode='min'):
        super(AveragedEvaluation, self).__init__()
        if not (isinstance(validation_data, (tuple, list)) and len(validation_data) in (2, 3)):
            raise ValueError('validation_data must be (x, y) or (x, y, sample_weight)')
        self.validation_data_ = tuple(validation_data)
        self.batch_size = checks.positive_integer('batch_size', batch_size)
        self.batch_norm_data = batch_norm_data
        self.filepath, self.monitor = filepath, monitor
        self.save_best_only = checks.flag('save_best_only', save_best_only)
        self.mode = checks.one_of('mode', mode, ('min', 'max'))
        self.best = None

    def _average(self):
        from .wrappers import chain
        for optimizer in chain(self.model.optimizer):
            if getattr(optimizer, 'is_average', False):
                return optimizer
        raise ValueError('AveragedEvaluation: the model\'s optimizer has no weight '
                         'average (ExponentialMovingAverage, StochasticWeightAveraging)')

    def on_epoch_end(self, epoch, logs=None):
        from .averaging import update_batch_norm
        logs = logs if logs is not None else {}
        x, y = self.validation_data_[:2]
        weights = self.validation_data_[2] if len(self.validation_data_) == 3 else None
        with self._average().swap_weights(self.model):
            if self.batch_norm_data is not None:
                update_batch_norm(self.model, self.batch_norm_data, self.batch_size)
            results = self.model.evaluate(x, y, batch_size=self.batch_size,
                                          sample_weight=weights, verbose=0)
            results = results if isinstance(results, list) else [results]
            for name, value in zip(self.model.metrics_names, results):
                logs['avg_val_' + name] = value
            if self.filepath is not None:
                self._save(epoch, logs)

    def _save(self, epoch, logs):
        if self.save_best_only:
            current = logs.get(self.monitor)
            if current is None:
                warnings.warn('AveragedEvaluation: %s is not in the logs; not saved' % self.monitor)
                return
            better = self.best is None or (current < self.best if self.mode == 'min'
                                           else current > self.best)
            if not better:
                return
            self.best = current
        save_model(self.model, self.filepath.format(epoch=epoch + 1, **logs))
