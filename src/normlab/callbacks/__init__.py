"""Callbacks: hooks into ``fit``, ``evaluate`` and ``predict``."""

from .backup import BackupAndRestore
from .base import Callback, CallbackList, History, registry
from .batchnorm import RecomputeBatchNormStatistics
from .diagnostics import TrainingDiagnostics
from .early_stopping import EarlyStopping, train_on_all_data
from .lr import LearningRateScheduler, ReduceLROnPlateau
from .misc import CSVLogger, LambdaCallback, ModelCheckpoint, TerminateOnNaN
from .progbar import ProgbarLogger

__all__ = [
    "Callback",
    "CallbackList",
    "History",
    "ProgbarLogger",
    "EarlyStopping",
    "BackupAndRestore",
    "ModelCheckpoint",
    "TerminateOnNaN",
    "CSVLogger",
    "LambdaCallback",
    "train_on_all_data",
    "TrainingDiagnostics",
    "LearningRateScheduler",
    "ReduceLROnPlateau",
    "RecomputeBatchNormStatistics",
    "get",
]


def get(identifier):
    return registry.get(identifier, base=Callback)
