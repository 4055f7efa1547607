"""Scoring on the vehicle: kernels, temporal selection, backends; no PyTorch."""
