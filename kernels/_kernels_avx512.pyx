"""Cython kernels of the ``cython`` backend, the build for x86-64 CPUs with AVX-512.

The same source as ``_kernels`` (included below), compiled with AVX-512 F, VL, BW and DQ,
AVX2 and FMA, preferring 512-bit vectors (see ``setup.py``): the per-step products of
``fastrnn_mm.h`` keep 24 of the 32 vector registers busy with 16-float sums, and the
element-wise loops run 16 floats wide.  ``fastrnn._cython`` imports this build when the CPU
and its operating system run AVX-512, unless ``FASTRNN_CYTHON_ISA`` says otherwise.
"""

include "_kernels.pyx"
