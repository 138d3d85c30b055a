"""Triton kernels of equiops (installed as ``equiops.kernels``)."""
