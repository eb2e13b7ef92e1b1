"""Private implementation of :mod:`medcnn.explain` (attribution methods and helpers)."""
