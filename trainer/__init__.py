"""Training, evaluation and active-learning cycles (PyTorch)."""
