"""Encoder-decoder models with the toolkit (fastrnn.train.Decoder): finite differences through
the whole model (embeddings, encoder, decoder, head) with lengths on both sides, on every
backend; and the two commands, ``fastrnn seq2seq`` and ``fastrnn caption``, at tiny sizes."""

import os
import re

import numpy as np
import pytest

import fastrnn
from fastrnn.__main__ import main
from fastrnn.train import Decoder, Embedding, cross_entropy
from helpers import numerical_gradient, required

V, E, H = 7, 3, 4
PAD = 0


def encoder_decoder(backend, cell):
    src_emb = Embedding(V, E, padding_idx=PAD, dtype=np.float64, seed=0)
    encoder = getattr(fastrnn, cell.upper())(E, H, dtype=np.float64, seed=1, backend=backend)
    decoder = Decoder(V, E, H, cell=cell, padding_idx=PAD, dtype=np.float64, seed=2,
                      backend=backend)
    return src_emb, encoder, decoder


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_gradients_through_the_encoder_decoder_match_finite_differences(backend, cell):
    rng = np.random.default_rng(0)
    src_emb, encoder, decoder = encoder_decoder(backend, cell)
    src = rng.integers(1, V, (5, 3))
    src_len = np.array([5, 2, 4])
    tgt_in = rng.integers(1, V, (4, 3))
    tgt_out = rng.integers(1, V, (4, 3))
    tgt_len = np.array([3, 4, 1])
    tgt_out[np.arange(4)[:, None] >= tgt_len[None, :]] = PAD

    def loss(backward=False):
        enc_out, state = encoder(src_emb(src), lengths=src_len)
        logits, _ = decoder(tgt_in, state, lengths=tgt_len)
        value, dlogits = cross_entropy(logits, tgt_out, ignore_index=PAD)
        if backward:
            dstate = decoder.backward(dlogits)
            dsrc, _ = encoder.backward(np.zeros_like(enc_out), dstate)
            src_emb.backward(dsrc)
        return value

    modules = {"src_emb": src_emb, "encoder": encoder, **decoder.modules}
    for m in modules.values():
        m.train()
    loss(backward=True)
    for m in modules.values():
        m.eval()
    for mname, m in modules.items():
        for pname, p in m.parameters().items():
            numeric = numerical_gradient(loss, p)
            np.testing.assert_allclose(m.grads[pname], numeric, rtol=1e-5, atol=1e-8,
                                       err_msg=f"{mname}.{pname}")
    assert np.any(encoder.grads["weight_hh_l0"] != 0)   # the decoder's gradient reached it


def test_decoder_step_is_the_layer_on_one_step():
    _, _, decoder = encoder_decoder("numpy", "lstm")
    decoder.eval()
    tokens = np.array([[1, 2, 3], [4, 5, 6]])
    state = (np.zeros((1, 3, H)), np.zeros((1, 3, H)))
    logits, _ = decoder(tokens, state)
    logp, state1 = decoder.step(tokens[0], state)
    logp2, _ = decoder.step(tokens[1], state1)
    for lp, lg in ((logp, logits[0]), (logp2, logits[1])):
        np.testing.assert_allclose(lp, lg - np.log(np.exp(lg).sum(axis=1, keepdims=True)),
                                   rtol=1e-12)


def test_decoding_between_a_forward_and_its_backward_leaves_the_backward_alone():
    """A greedy or beam search (a quick look at the outputs) between the teacher-forced forward
    and its backward: the decoding runs in evaluation mode and the backward gives what it
    gives without it; the decoder stays in training mode."""
    tokens = np.array([[1, 2, 3], [4, 5, 6]])
    grads = []
    for decode in (None, "greedy", "beam"):
        _, _, decoder = encoder_decoder("numpy", "gru")
        state = np.zeros((1, 3, H))
        logits, _ = decoder(tokens, state)
        if decode:
            getattr(decoder, decode)(state, 1, 3)
        dstate = decoder.backward(np.ones_like(logits))
        assert all(m.training for m in decoder.modules.values())
        grads.append([dstate] + [g for m in decoder.modules.values() for g in m.grads.values()])
    for other in grads[1:]:
        for a, b in zip(grads[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_bad_decoder_backward_adds_nothing_and_keeps_the_forward(cell):
    """Decoder.backward checks dlogits and dhy before the head's backward runs (a wrong dhy
    added the head's gradients and used up its forward)."""
    _, _, decoder = encoder_decoder("numpy", cell)
    tokens = np.array([[1, 2, 3], [4, 5, 6]])
    state = np.zeros((1, 3, H))
    state = (state, state) if cell == "lstm" else state
    logits, _ = decoder(tokens, state)
    wrong = np.zeros((1, 3, H)) if cell == "lstm" else (np.zeros((1, 3, H)),) * 2
    error = TypeError if cell == "lstm" else ValueError
    with pytest.raises(error, match="dhy"):
        decoder.backward(np.ones_like(logits), wrong)
    with pytest.raises(ValueError, match=r"dlogits must have shape \(2, 3, \d+\)"):
        decoder.backward(np.ones_like(logits[:1]))
    assert all(not np.any(g) for m in decoder.modules.values() for g in m.grads.values())
    dstate = decoder.backward(np.ones_like(logits), state)
    assert np.any(decoder.head.grads["weight"]) and np.any(dstate[0] if cell == "lstm" else dstate)


def test_a_cells_state_given_to_decoder_search_is_named():
    _, _, decoder = encoder_decoder("numpy", "gru")
    for search in (decoder.greedy, decoder.beam):
        with pytest.raises(ValueError, match=rf"state must be the layer's state, \(num_layers, "
                                             rf"N, hidden_size\) = \(1, N, {H}\), but got "
                                             rf"shape \(2, {H}\)"):
            search(np.zeros((2, H)), 1, 3)


def test_seq2seq_trains_on_no_held_out_question():
    """The command's score is on questions training never sees: a tenth of them, by a hash of
    the text (the test questions were fresh draws, 78% of them seen in training)."""
    from fastrnn.cli import seq2seq
    rng = np.random.default_rng(0)
    train = {q for _ in range(50) for q in seq2seq.questions(rng, 128)[0]}
    test, answers = seq2seq.questions(np.random.default_rng(1), 500, test=True)
    assert len(test) == 500 and not train & set(test)
    assert all(seq2seq.held_out(q) for q in test) and not any(map(seq2seq.held_out, train))
    assert all(str(eval(q)) == a for q, a in zip(test, answers))
    assert {len(q) for q in test} == {3, 4, 5, 6, 7}      # every size of numbers is held out


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_seq2seq_command_tiny(capsys, tmp_path):
    status, out, err = run(capsys, "seq2seq", "--steps", "20", "--hidden", "8", "--batch", "16",
                           "--test-size", "40", "--examples", "3", "--quiet", "--beam", "2")
    assert status == 0, err
    m = re.search(r"exact match ([\d.]+), per character ([\d.]+)", out)
    assert m and 0 <= float(m.group(1)) <= 1 and 0 <= float(m.group(2)) <= 1
    assert "beam search, width 2" in out
    assert len(re.findall(r"^\s+\d+\+\d+ = ", out, re.M)) == 3


def test_caption_command_tiny(capsys):
    if not required("FASTRNN_REQUIRE_SKLEARN"):
        pytest.importorskip("sklearn", reason="fastrnn caption reads scikit-learn's digits")
    status, out, err = run(capsys, "caption", "--epochs", "1", "--hidden", "8", "--quiet")
    assert status == 0, err
    m = re.search(r"held-out \((\d+) images, greedy decoding\): exact match ([\d.]+)", out)
    assert m and int(m.group(1)) == 450


@pytest.mark.parametrize("command", ["seq2seq", "caption"])
def test_help_and_bad_arguments(capsys, command):
    status, out, _ = run(capsys, command, "--help")
    assert status == 0 and f"fastrnn {command}" in out and "--seed" in out and "--plot" in out
    status, _, err = run(capsys, command, "--hidden", "0")
    assert status == 2 and "--hidden" in err


def test_decoding_from_several_threads_keeps_the_pending_teacher_forced_forward():
    """Greedy decodes of one decoder from two threads at once, between a teacher-forced forward
    and its backward: the decoder ends in training mode with the forward's record, and the
    backward is the one a single thread gets."""
    from concurrent.futures import ThreadPoolExecutor
    dec = Decoder(30, 16, 64, seed=0)
    tokens = np.ones((6, 4), int)
    state = tuple(np.zeros((1, 4, 64), np.float32) for _ in range(2))
    logits, _ = dec(tokens, state)
    want = [g.copy() for g in (dec.greedy(state, 1, 20)[0],)]
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(lambda: [dec.greedy(state, 1, 20)[0] for _ in range(30)])
                for _ in range(2)]
        for run in runs:
            assert all(np.array_equal(got, want[0]) for got in run.result(timeout=300))
    assert all(m.training for m in dec.modules.values())
    got = dec.backward(np.cos(logits))
    alone = Decoder(30, 16, 64, seed=0)
    alone(tokens, state)
    for a, b in zip(got, alone.backward(np.cos(logits))):
        for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            np.testing.assert_array_equal(x, y)


def test_training_in_one_thread_while_another_decodes():
    """One thread trains a decoder (teacher-forced forward, then its backward) while another
    decodes with it: a decode runs in evaluation mode for its own thread only, so no training
    forward runs in evaluation mode (its backward would raise), the gradients are those of the
    same steps alone and every decode is the one a single thread gets."""
    import threading
    from concurrent.futures import ThreadPoolExecutor
    dec = Decoder(30, 16, 64, seed=0)
    tokens = np.ones((6, 4), int)
    state = tuple(np.zeros((1, 4, 64), np.float32) for _ in range(2))
    want = dec.greedy(state, 1, 20)[0]
    alone = Decoder(30, 16, 64, seed=0)
    for _ in range(40):
        logits, _ = alone(tokens, state)
        alone.backward(np.cos(logits))
    done = threading.Event()

    def train():
        try:
            for _ in range(40):
                logits, _ = dec(tokens, state)
                assert all(m.training for m in dec.modules.values())
                dec.backward(np.cos(logits))
        finally:
            done.set()

    def decode():
        decodes = 0
        while not done.is_set() or decodes == 0:
            np.testing.assert_array_equal(dec.greedy(state, 1, 20)[0], want)
            decodes += 1
        return decodes

    with ThreadPoolExecutor(2) as pool:
        trainer, decoder = pool.submit(train), pool.submit(decode)
        trainer.result(timeout=300)
        assert decoder.result(timeout=300) > 0
    for name, module in dec.modules.items():
        for key, grad in module.grads.items():
            np.testing.assert_array_equal(grad, alone.modules[name].grads[key], err_msg=key)


def test_a_cells_decoding_steps_take_its_prepared_plan():
    """A cell stepped inside an evaluating block (a decoder's steps) while its mode is training
    takes the plan an eval step prepares, as in eval mode: the first step prepares it, the
    others do not go through the general step."""
    import fastrnn
    from fastrnn.module import evaluating
    cell = fastrnn.LSTMCell(8, 16, seed=0)
    x, hx = np.ones((1, 8), np.float32), (np.zeros((1, 16), np.float32),) * 2
    want = fastrnn.LSTMCell(8, 16, seed=0).eval()(x, hx)
    steps = []
    general = cell._step

    def counting(*args):
        steps.append(1)
        return general(*args)
    cell._step = counting
    with evaluating([cell]):
        for _ in range(5):
            got = cell(x, hx)
    assert cell.training and len(steps) == 1
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
