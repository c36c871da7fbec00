"""fastrnn.train.greedy_search / beam_search: width 1 is greedy, a wide enough beam finds the best
sequence of a toy model where all of them can be enumerated, a beam beats greedy where greedy
is led astray, batching, a real decoder (Embedding, GRUCell, Linear) through the step path."""

import itertools

import numpy as np
import pytest

import fastrnn
from fastrnn.train import Embedding, Linear, beam_search, greedy_search, log_softmax

END, V = 0, 3


def table_model(seed, V=V, T=6):
    """log p(token | last token, step): a random Markov table per step; state = the step."""
    rng = np.random.default_rng(seed)
    table = np.log(rng.dirichlet(np.ones(V) * 2.0, size=(T, V + 1, 1)).squeeze(2))

    def step(tokens, t):
        return table[t, tokens], t + 1
    return step


def score(step, seq, start):
    """Sum of log-probabilities of one sequence under ``step`` (N=1)."""
    total, tokens, state = 0.0, np.array([start]), np.zeros(1, dtype=np.int64)
    for tok in seq:
        logp, state = step(tokens, state)
        total += logp[0, tok]
        tokens = np.array([tok])
    return total


def best_sequence(step, start, max_len, length_penalty):
    return max(all_sequences(max_len),
               key=lambda s: score(step, s, start) / len(s) ** length_penalty)


def all_sequences(max_len):
    """Every sequence a decoder can emit: up to the first END, or max_len tokens."""
    for L in range(1, max_len + 1):
        for seq in itertools.product(range(V), repeat=L):
            if END not in seq[:-1] and (seq[-1] == END or L == max_len):
                yield seq


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("length_penalty", [0.0, 0.5, 1.0, 2.0])
def test_a_beam_as_wide_as_every_candidate_finds_the_best_sequence(seed, length_penalty):
    step, start, max_len = table_model(seed), V, 4      # start: an extra row of the table
    best = best_sequence(step, start, max_len, length_penalty)
    n = 2
    tokens, lengths, scores = beam_search(step, np.zeros(n, np.int64), start, max_len, END,
                                          beam_width=V ** max_len, length_penalty=length_penalty)
    for b in range(n):
        assert tuple(tokens[b, :lengths[b]]) == best
        assert scores[b] == pytest.approx(score(step, best, start))


def test_the_enumerated_cases_are_ones_greedy_gets_wrong_too():
    """(else the test above could not tell a beam from greedy search)"""
    misses = 0
    for seed, length_penalty in itertools.product(range(8), [0.0, 1.0]):
        step = table_model(seed)
        tokens, lengths, _ = greedy_search(step, np.zeros(1, np.int64), V, 4, END)
        misses += tuple(tokens[0, :lengths[0]]) != best_sequence(step, V, 4, length_penalty)
    assert misses >= 4


def test_beam_beats_greedy_where_greedy_is_led_astray():
    # step 0: token 1 (-0.5) looks better than token 2 (-0.9); after 1 every token is poor,
    # after 2 the end token is almost sure
    logp = np.log(np.array([[0.0, 0.6, 0.4],          # from start (row 3 below)
                            [0.98, 0.01, 0.01]]) + 1e-300)
    rows = {3: logp[0], 1: np.log([1 / 3] * 3), 2: logp[1], 0: np.log([1.0, 1e-9, 1e-9])}

    def step(tokens, state):
        return np.stack([rows[int(t)] for t in tokens]), state
    g_tokens, g_len, g_score = greedy_search(step, np.zeros(1), 3, 3, END)
    b_tokens, b_len, b_score = beam_search(step, np.zeros(1), 3, 3, END, beam_width=2,
                                           length_penalty=0.0)
    assert list(b_tokens[0, :b_len[0]]) == [2, 0] and b_score[0] > g_score[0]
    assert g_tokens[0, 0] == 1


@pytest.mark.parametrize("batch_axis", [0, 1])
def test_width_one_is_greedy_on_a_real_decoder(batch_axis):
    """Embedding -> GRU (cell at batch_axis 0, layer on T=1 at batch_axis 1) -> Linear."""
    Vr, E, H, n = 7, 5, 8, 6
    emb, head = Embedding(Vr, E, seed=0), Linear(H, Vr, seed=1)
    for m in (emb, head):
        m.eval()
    if batch_axis == 0:
        cell = fastrnn.GRUCell(E, H, seed=2).eval()

        def step(tokens, h):
            h = cell(emb(tokens), h)
            return log_softmax(head(h)), h
        h0 = np.random.default_rng(0).standard_normal((n, H)).astype(np.float32)
    else:
        gru = fastrnn.GRU(E, H, seed=2).eval()

        def step(tokens, h):
            out, h = gru(emb(tokens)[None], h)
            return log_softmax(head(out[0])), h
        h0 = np.random.default_rng(0).standard_normal((1, n, H)).astype(np.float32)
    g = greedy_search(step, h0, 1, 9, END, batch_axis=batch_axis)
    b = beam_search(step, h0, 1, 9, END, beam_width=1, batch_axis=batch_axis)
    for x, y in zip(g, b):
        np.testing.assert_allclose(x, y, rtol=1e-6)
    # each sequence decoded alone gives the same as in the batch
    for i in range(n):
        hi = h0[i:i + 1] if batch_axis == 0 else h0[:, i:i + 1]
        t_i, l_i, _ = beam_search(step, hi, 1, 9, END, beam_width=3, batch_axis=batch_axis)
        t_all, l_all, _ = beam_search(step, h0, 1, 9, END, beam_width=3, batch_axis=batch_axis)
        assert l_i[0] == l_all[i]
        assert np.array_equal(t_i[0, :l_i[0]], t_all[i, :l_all[i]])


def test_a_namedtuple_state_stays_one():
    """An LSTM's (h, c) as a namedtuple: beam_search reorders it and gives the step the same
    type (it called the type with one list: a TypeError inside the search)."""
    from collections import namedtuple
    HC = namedtuple("HC", "h c")
    Vr, E, H, n = 7, 5, 8, 3
    emb, head = Embedding(Vr, E, seed=0).eval(), Linear(H, Vr, seed=1).eval()
    cell = fastrnn.LSTMCell(E, H, seed=2).eval()
    seen = set()

    def step(tokens, state):
        seen.add(type(state))
        h, c = cell(emb(tokens), tuple(state))
        return log_softmax(head(h)), HC(h, c)
    rng = np.random.default_rng(0)
    h0 = HC(*rng.standard_normal((2, n, H)).astype(np.float32))
    got = beam_search(step, h0, 1, 6, END, beam_width=2)
    want = beam_search(lambda t, s: step(t, HC(*s)), tuple(h0), 1, 6, END, beam_width=2)
    assert seen == {HC}
    for x, y in zip(got, want):
        np.testing.assert_array_equal(x, y)


def test_greedy_keeps_the_end_token_and_pads_with_it():
    step = table_model(3)
    tokens, lengths, _ = greedy_search(step, np.zeros(4, np.int64), V, 6, END)
    for row, n in zip(tokens, lengths):
        assert END not in row[:n - 1]
        assert n == len(row) or (row[n - 1] == END and np.all(row[n:] == END))


def test_greedy_repeats_the_end_token_of_a_sequence_that_ended_first():
    """Sequence 0 ends at its first step and the model then prefers another token for it:
    its later positions still repeat the end token, while sequence 1 runs on."""
    def step(tokens, t):
        logp = np.log(np.full((2, 3), 0.1))
        logp[0, 0] = np.log(0.8) if t[0] == 0 else -5.0
        logp[0, 2] = np.log(0.8) if t[0] > 0 else -5.0
        logp[1, 1] = np.log(0.8)
        return logp, t + 1
    tokens, lengths, _ = greedy_search(step, np.zeros(2, np.int64), 1, 4, end=0)
    assert lengths.tolist() == [1, 4]
    assert tokens.tolist() == [[0, 0, 0, 0], [1, 1, 1, 1]]


def test_bad_arguments_are_named():
    step = table_model(0)
    state = np.zeros(2, np.int64)
    with pytest.raises(ValueError, match="beam_width"):
        beam_search(step, state, V, 3, END, beam_width=0)
    with pytest.raises(ValueError, match="length_penalty"):
        beam_search(step, state, V, 3, END, length_penalty=-1.0)
    with pytest.raises(ValueError, match="max_len"):
        greedy_search(step, state, V, 0, END)
    with pytest.raises(TypeError, match="state must be an array"):
        greedy_search(step, None, V, 3, END)
    with pytest.raises(ValueError, match="same size along batch_axis"):
        greedy_search(step, (np.zeros(2), np.zeros(3)), V, 3, END)
    with pytest.raises(ValueError, match="log-probabilities of shape"):
        greedy_search(lambda t, s: (np.zeros(3), s), state, V, 3, END)
    for search in (greedy_search, beam_search):   # a list pair is a pair too
        search(lambda t, s: [np.log(np.full((len(t), V), 1.0 / V)), s], state, V, 3, END)
    for search in (greedy_search, beam_search):
        where = search.__name__
        with pytest.raises(TypeError, match=rf"{where}: step must return a pair \(log_probs "
                                            rf"\(N, V\), state\), but returned an array"):
            search(lambda t, s: np.zeros((len(t), V)), state, V, 3, END)
        with pytest.raises(TypeError, match=rf"{where}: step must return the new state \(an "
                                            rf"array or a tuple of arrays\) second, but "
                                            rf"returned NoneType"):
            search(lambda t, s: (np.zeros((len(t), V)), None), state, V, 3, END)
        with pytest.raises(ValueError, match=rf"{where}: step must return a state of N=\d+ "
                                             rf"sequences along batch_axis=0, but returned 1"):
            search(lambda t, s: (np.zeros((len(t), V)), np.zeros(1)), state, V, 3, END)
    for search in (greedy_search, beam_search):
        with pytest.raises(ValueError, match=r"batch_axis must be an axis of every state array, "
                                             r"but got batch_axis=1 for states of shapes \[\(2,\)\]"):
            search(step, state, V, 3, END, batch_axis=1)
        with pytest.raises(ValueError, match=rf"end must be a token of the step's vocabulary, "
                                             rf"in \[0, {V}\), but got {V}"):
            search(step, state, V, 3, V)   # (greedy search never ended; beam's IndexError)
