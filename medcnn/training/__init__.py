"""Training: data loading and splits, augmentation, losses/optimisers/schedules, box supervision, the loop.

One run skeleton (:func:`train`; :mod:`medcnn.training.loop` with the epoch loop in
:mod:`medcnn.training.fit`) trains every model; what differs between a softmax and a sigmoid
(multi-label) model is a small strategy object, :mod:`medcnn.training.heads`.
"""
from __future__ import annotations

from medcnn.training.loop import TrainConfig, TrainResult, cross_validate, load_training_data, train

__all__ = ['TrainConfig', 'TrainResult', 'cross_validate', 'load_training_data', 'train']
