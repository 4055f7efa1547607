"""Datasets: one annotation model, readers and writers for public formats, augmentation."""
