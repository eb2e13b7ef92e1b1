"""Training: data loading and splits, augmentation, losses/optimisers/schedules, box supervision, the loop.
"""
from __future__ import annotations

from medcnn.training.loop import TrainConfig, TrainResult, cross_validate, load_training_data, train

__all__ = ['TrainConfig', 'TrainResult', 'cross_validate', 'load_training_data', 'train']
