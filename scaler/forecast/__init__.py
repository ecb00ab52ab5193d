"""The pure forecaster: numba Holt-Winters kernels and the per-model demand forecaster."""
