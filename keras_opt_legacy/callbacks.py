"""Crash-safe checkpoints of the model and its optimizer state."""
import os
import re

import h5py
import keras

from .state import load_model, save_model

_NAME = re.compile(r'^checkpoint-(\d{8})\.h5$')


class Checkpoint(keras.callbacks.Callback):
    """Save the model with its optimizer state atomically at the end of every epoch (or every
    `every_batches` batches), keeping the newest `keep` checkpoints.

    Each save writes a temporary file in the same directory, flushes and fsyncs it, then renames
    it into place (and fsyncs the directory): a crash mid-save leaves the previous checkpoints
    intact and only a temporary file behind, which is never loaded. Resume with
    `model, epoch = Checkpoint.load_latest(directory)` and `model.fit(..., initial_epoch=epoch)`.
    """

    def __init__(self, directory, keep=3, every_batches=None):
        super(Checkpoint, self).__init__()
        if keep < 1:
            raise ValueError('keep must be >= 1, got %r' % (keep,))
        if every_batches is not None and every_batches < 1:
            raise ValueError('every_batches must be >= 1 or None, got %r' % (every_batches,))
        self.directory, self.keep, self.every_batches = directory, keep, every_batches
        os.makedirs(directory, exist_ok=True)
        latest = self.latest(directory)
        self._batches = self._number(latest) if latest else 0
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None):
        self._batches += 1
        if self.every_batches and self._batches % self.every_batches == 0:
            self.save(epoch=self._epoch)

    def on_epoch_end(self, epoch, logs=None):
        if not self.every_batches:
            self.save(epoch=epoch + 1)

    def save(self, epoch):
        """Write checkpoint number `batches seen so far`; `epoch` = completed epochs."""
        path = os.path.join(self.directory, 'checkpoint-%08d.h5' % self._batches)
        temporary = os.path.join(self.directory, '.%s.%d.tmp' % (os.path.basename(path),
                                                                os.getpid()))
        save_model(self.model, temporary)
        with h5py.File(temporary, 'r+') as f:
            f.attrs['keras_opt_legacy_epoch'] = epoch
        _fsync(temporary)
        os.replace(temporary, path)
        _fsync(self.directory)
        for old in self.checkpoints(self.directory)[:-self.keep]:
            os.remove(old)
        return path

    @staticmethod
    def _number(path):
        return int(_NAME.match(os.path.basename(path)).group(1))

    @staticmethod
    def checkpoints(directory):
        """Complete checkpoints in `directory`, oldest first."""
        if not os.path.isdir(directory):
            return []
        names = sorted(n for n in os.listdir(directory) if _NAME.match(n))
        return [os.path.join(directory, n) for n in names]

    @classmethod
    def latest(cls, directory):
        found = cls.checkpoints(directory)
        return found[-1] if found else None

    @classmethod
    def load_latest(cls, directory, custom_objects=None):
        """`(model, completed epochs)` from the newest checkpoint, or `(None, 0)` if none."""
        path = cls.latest(directory)
        if path is None:
            return None, 0
        return cls.load(path, custom_objects)

    @staticmethod
    def load(path, custom_objects=None):
        """`(model, completed epochs)` from the checkpoint `path`."""
        with h5py.File(path, 'r') as f:
            epoch = int(f.attrs['keras_opt_legacy_epoch'])
        return load_model(path, custom_objects=custom_objects), epoch


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
