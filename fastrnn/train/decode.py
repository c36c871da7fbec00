"""Decoding a sequence model one token at a time: greedy search and beam search, batched.

Both drive a *step function* of the caller's, which is how a trained decoder runs: an
embedding, a cell (or a layer on T=1), a head and a log-softmax::

    def step(tokens, state):                   # tokens (N,) ints, state: (h, c) of (N, H)
        h, c = cell(emb(tokens), state)
        return log_softmax(head(h)), (h, c)    # (N, V) log-probabilities, the new state

``state`` is an array or a tuple of arrays with the N sequences along ``batch_axis`` (0 for
cells; 1 for a layer's (L*D, N, H) states); beam search reorders it as beams are kept and
dropped.  Every sequence starts from the ``start`` token and ends at the ``end`` token (which
is kept in the output) or after ``max_len`` tokens.
"""

import numpy as np

from .. import _checks

__all__ = ["greedy_search", "beam_search"]


def _states(state):
    return (state,) if isinstance(state, np.ndarray) else tuple(state)


def _like(state, arrays):
    """``arrays`` in the form of ``state``: one array, a tuple (a namedtuple too) or a list."""
    if isinstance(state, np.ndarray):
        return arrays[0]
    if isinstance(state, tuple):
        return type(state)(*arrays) if hasattr(state, "_fields") else type(state)(arrays)
    return list(arrays)


def _take(state, index, batch_axis):
    return _like(state, [np.take(s, index, axis=batch_axis) for s in _states(state)])


def _batch_size(state, batch_axis):
    shapes = [np.shape(s) for s in _states(state)]
    if any(len(shape) <= batch_axis for shape in shapes):
        raise ValueError(f"batch_axis must be an axis of every state array, but got "
                         f"batch_axis={batch_axis} for states of shapes {shapes}")
    sizes = {shape[batch_axis] for shape in shapes}
    if len(sizes) != 1:
        raise ValueError(f"state: every array must have the same size along batch_axis="
                         f"{batch_axis}, but got sizes {sorted(sizes)}")
    return sizes.pop()


def _check_log_probs(logp, n, end, where):
    logp = np.asarray(logp)
    if logp.ndim != 2 or logp.shape[0] != n:
        raise ValueError(f"{where}: step must return log-probabilities of shape (N, V) with "
                         f"N={n}, but returned shape {logp.shape}")
    if end is not None and end >= logp.shape[1]:
        raise ValueError(f"{where}: end must be a token of the step's vocabulary, in [0, "
                         f"{logp.shape[1]}), but got {end}")
    return logp


def _call_step(step, tokens, state, end, batch_axis, where):
    """``step(tokens, state)``, its result checked: ``(log_probs (N, V), state)``."""
    n = len(tokens)
    result = step(tokens, state)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        got = (f"a {type(result).__name__} of length {len(result)}"
               if isinstance(result, (tuple, list)) else
               f"an array of shape {result.shape}" if isinstance(result, np.ndarray) else
               f"a {type(result).__name__}")
        raise TypeError(f"{where}: step must return a pair (log_probs (N, V), state), but "
                        f"returned {got}")
    logp, state = result
    if not isinstance(state, (np.ndarray, tuple, list)) or not _states(state):
        raise TypeError(f"{where}: step must return the new state (an array or a tuple of "
                        f"arrays) second, but returned {type(state).__name__}")
    size = _batch_size(state, batch_axis)
    if size != n:
        raise ValueError(f"{where}: step must return a state of N={n} sequences along "
                         f"batch_axis={batch_axis}, but returned {size}")
    return _check_log_probs(logp, n, end, where), state


def _check_common(state, start, max_len, end, batch_axis):
    if not isinstance(state, (np.ndarray, tuple, list)) or not _states(state):
        raise TypeError(f"state must be an array or a tuple of arrays, but got "
                        f"{type(state).__name__}")
    batch_axis = _checks.check_int("batch_axis", batch_axis, minimum=0)
    max_len = _checks.check_int("max_len", max_len)
    start = _checks.check_int("start", start, minimum=0)
    if end is not None:
        end = _checks.check_int("end", end, minimum=0)
    return _batch_size(state, batch_axis), start, max_len, end, batch_axis


def greedy_search(step, state, start, max_len, end=None, *, batch_axis=0):
    """The most likely next token at every step, for each of N sequences at once.

    Parameters
    ----------
    step : callable ``step(tokens (N,), state) -> (log_probs (N, V), state)``
    state : array or tuple of arrays
        The decoder's initial state (e.g. an encoder's final state), N along ``batch_axis``.
    start : int
        The token every sequence starts from (fed to the first step, not in the output).
    max_len : int
        Tokens generated at most.
    end : int, optional
        The token that ends a sequence (kept in the output; later positions repeat it).
    batch_axis : int

    Returns
    -------
    tokens : (N, L) int64 array, L <= max_len (the last step any sequence needed)
    lengths : (N,) int64 array
        Tokens of each sequence, its end token included.
    scores : (N,) float64 array
        Sum of the log-probabilities of each sequence's tokens.
    """
    n, start, max_len, end, batch_axis = _check_common(state, start, max_len, end, batch_axis)
    tokens = np.full(n, start, dtype=np.int64)
    done = np.zeros(n, dtype=bool)
    lengths = np.zeros(n, dtype=np.int64)
    scores = np.zeros(n)
    out = []
    for t in range(max_len):
        logp, state = _call_step(step, tokens, state, end, batch_axis, "greedy_search")
        tokens = np.argmax(logp, axis=1).astype(np.int64)
        if end is not None:
            tokens[done] = end
        scores += np.where(done, 0.0, logp[np.arange(n), tokens])
        lengths += ~done
        out.append(tokens)
        if end is not None:
            done |= tokens == end
            if done.all():
                break
    return np.stack(out, axis=1), lengths, scores


def beam_search(step, state, start, max_len, end=None, *, beam_width=4, length_penalty=1.0,
                batch_axis=0):
    """Beam search: the ``beam_width`` best partial sequences kept at every step, for each of N
    sequences at once (N * beam_width rows per call of ``step``).

    A finished hypothesis (its end token emitted) stays among the candidates with its score
    unchanged; the search stops when every beam of every sequence has finished, or after
    ``max_len`` tokens.  The best hypothesis of each sequence is the one with the highest
    ``score / length ** length_penalty`` (0: the plain sum of log-probabilities, which favours
    short sequences; 1: the mean per token).  With ``beam_width=1`` this is greedy search.

    Parameters
    ----------
    step, state, start, max_len, end, batch_axis
        As :func:`greedy_search`.
    beam_width : int
    length_penalty : float, >= 0

    Returns
    -------
    tokens : (N, L) int64 array
        The best hypothesis of each sequence (later positions repeat ``end``, or 0 without one).
    lengths : (N,) int64 array
    scores : (N,) float64 array
        Sum of the log-probabilities of the best hypothesis's tokens (not normalised).
    """
    n, start, max_len, end, batch_axis = _check_common(state, start, max_len, end, batch_axis)
    k = _checks.check_int("beam_width", beam_width)
    alpha = _checks.check_real("length_penalty", length_penalty, minimum=0.0)
    rows = np.repeat(np.arange(n), k)                   # row n*k + j: beam j of sequence n
    state = _take(state, rows, batch_axis)
    tokens = np.full(n * k, start, dtype=np.int64)
    scores = np.full((n, k), -np.inf)
    scores[:, 0] = 0.0                                  # one live beam until the first step
    done = np.zeros((n, k), dtype=bool)
    lengths = np.zeros((n, k), dtype=np.int64)
    history = np.zeros((n, k, 0), dtype=np.int64)
    for t in range(max_len):
        logp, state = _call_step(step, tokens, state, end, batch_axis, "beam_search")
        logp = logp.astype(np.float64, copy=False)
        V = logp.shape[1]
        logp = logp.reshape(n, k, V).copy()
        if end is not None:         # a finished beam extends only by end, at no cost
            logp[done] = -np.inf
            logp[done, end] = 0.0
        cand = (scores[:, :, None] + logp).reshape(n, k * V)
        # the k best candidates, ties broken by the lower index (stable sort of -score)
        best = np.argsort(-cand, axis=1, kind="stable")[:, :k]
        beam, token = best // V, best % V
        scores = np.take_along_axis(cand, best, axis=1)
        history = np.concatenate([np.take_along_axis(history, beam[:, :, None], axis=1),
                                  token[:, :, None]], axis=2)
        was_done = np.take_along_axis(done, beam, axis=1)
        lengths = np.take_along_axis(lengths, beam, axis=1) + ~was_done
        done = was_done | (token == end) if end is not None else was_done
        state = _take(state, (np.arange(n)[:, None] * k + beam).reshape(-1), batch_axis)
        tokens = token.reshape(-1).astype(np.int64)
        if done.all():
            break
    norm = scores / np.maximum(lengths, 1) ** alpha if alpha else scores
    norm = np.where(np.isfinite(scores), norm, -np.inf)
    pick = np.argmax(norm, axis=1)
    idx = np.arange(n)
    out = history[idx, pick]
    lengths_out = lengths[idx, pick]
    if end is not None:     # positions after the end token repeat it
        out = np.where(np.arange(out.shape[1])[None, :] < lengths_out[:, None], out, end)
    return out, lengths_out, scores[idx, pick]
