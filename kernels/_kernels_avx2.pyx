"""Cython kernels of the ``cython`` backend, the build for x86-64 CPUs with AVX2 and FMA.

The same source as ``_kernels`` (included below), compiled with ``-mavx2 -mfma``
(see ``setup.py``): the element-wise loops then run 8 floats wide with fused
multiply-adds, which measured 5-15% faster for whole sequences.  ``fastrnn._cython``
imports this build when the CPU has both, unless ``FASTRNN_CYTHON_ISA`` says otherwise.
"""

include "_kernels.pyx"
