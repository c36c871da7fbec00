"""Cython kernels of the ``cython`` backend, the build for x86-64 CPUs with AVX2 and FMA.

The same source as ``_kernels`` (included below), compiled with ``-mavx2 -mfma``
(see ``setup.py``): the element-wise loops and the per-step products then run 8 floats
wide with fused multiply-adds.  Whole sequences (RNN, LSTM, GRU at T=100, B=16..32,
H=128..256, forward or forward+backward, on 1 or 2 threads) measured 0.68-0.93x the
time of the baseline build (median 0.8).  ``fastrnn._cython`` imports this build when
the CPU has both, unless ``FASTRNN_CYTHON_ISA`` says otherwise.
"""

include "_kernels.pyx"
