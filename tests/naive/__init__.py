"""Plain NumPy references that the Numba kernels are tested against."""
