"""fastrnn.train.Embedding: torch.nn.Embedding's results, init and padding, the backward that adds
into the rows used, finite differences, bad ids, files and pickles."""

import pickle

import numpy as np
import pytest

import fastrnn
from fastrnn.train import Adam, Embedding
from helpers import numerical_gradient


def test_shapes_init_padding_and_config():
    emb = Embedding(50, 8, padding_idx=-1, seed=0)
    assert emb.padding_idx == 49 and emb.weight.shape == (50, 8) and emb.dtype == np.float32
    assert np.all(emb.weight[49] == 0)
    big = Embedding(1000, 100, seed=1).weight                 # N(0, 1), as torch
    assert abs(big.mean()) < 0.01 and abs(big.std() - 1) < 0.01
    assert emb(np.array([[1, 2, 3], [49, 0, 1]])).shape == (2, 3, 8)
    assert emb(7).shape == (8,)
    assert repr(emb) == "Embedding(50, 8, padding_idx=49)"
    assert Embedding(**emb.get_config()).get_config() == emb.get_config()


@pytest.mark.parametrize("padding_idx", [None, 2, -3])
def test_matches_torch_embedding(torch, padding_idx):
    """Forward and the weight's gradient, with repeated ids and the padding id among them."""
    emb = Embedding(10, 4, padding_idx=padding_idx, dtype=np.float64, seed=3)
    ref = torch.nn.Embedding(10, 4, padding_idx=padding_idx).double()
    ref.load_state_dict({"weight": torch.tensor(emb.weight)})
    ids = np.array([[2, 5, 2], [7, 2, 0], [5, 5, 1], [7, 9, 9]])   # (T, B)
    G = np.random.default_rng(0).standard_normal(ids.shape + (4,))
    out = emb(ids)
    emb.backward(G)
    out_t = ref(torch.tensor(ids))
    (out_t * torch.tensor(G)).sum().backward()
    np.testing.assert_array_equal(out, out_t.detach().numpy())
    np.testing.assert_allclose(emb.grads["weight"], ref.weight.grad.numpy(), rtol=0, atol=1e-14)
    if padding_idx is not None:
        assert np.all(emb.grads["weight"][emb.padding_idx] == 0)


def test_gradient_matches_finite_differences():
    emb = Embedding(6, 3, dtype=np.float64, seed=2)
    ids = np.array([[0, 4], [4, 4], [5, 1]])
    G = np.random.default_rng(1).standard_normal(ids.shape + (3,))
    emb(ids)
    emb.backward(G)
    emb.eval()
    numeric = numerical_gradient(lambda: np.sum(G * emb(ids)), emb.weight)
    np.testing.assert_allclose(emb.grads["weight"], numeric, rtol=1e-7, atol=1e-9)
    assert np.all(emb.grads["weight"][[2, 3]] == 0)       # ids never read get nothing


def test_ids_edited_between_forward_and_backward_do_not_move_the_gradient():
    emb = Embedding(5, 2, seed=0)
    ids = np.array([1, 2, 3])
    emb(ids)
    ids[:] = 4
    emb.backward(np.ones((3, 2)))
    assert np.all(emb.grads["weight"][[1, 2, 3]] == 1) and np.all(emb.grads["weight"][4] == 0)


def test_bad_arguments_are_named():
    emb = Embedding(5, 2)
    with pytest.raises(IndexError, match=r"token id 5 is out of range.*\[0, 5\)"):
        emb(np.array([0, 5]))
    with pytest.raises(IndexError, match="token id -1"):
        emb([-1, 2])
    with pytest.raises(TypeError, match="integer token ids.*float64"):
        emb(np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"padding_idx must be within num_embeddings.*got 5"):
        Embedding(5, 2, padding_idx=5)
    with pytest.raises(TypeError, match="padding_idx"):
        Embedding(5, 2, padding_idx=True)
    with pytest.raises((TypeError, ValueError), match="num_embeddings"):
        Embedding(0, 2)
    emb(np.array([1, 2]))
    with pytest.raises(ValueError, match="dout"):
        emb.backward(np.ones((3, 2)))
    emb.backward(np.ones((2, 2)))                          # the bad call did not consume it
    with pytest.raises(RuntimeError, match="forward pass in training mode"):
        emb.backward(np.ones((2, 2)))


def test_trains_with_the_toolkit_and_survives_files_and_pickles(tmp_path):
    emb = Embedding(7, 3, padding_idx=0, seed=5)
    opt = Adam(emb, lr=0.1)
    ids = np.array([[1, 0], [3, 1]])
    before = emb.weight.copy()
    emb.backward(np.ones(emb(ids).shape))
    opt.step()
    changed = np.any(emb.weight != before, axis=1)
    assert list(np.flatnonzero(changed)) == [1, 3]          # the padding row stays zero
    emb.save(tmp_path / "e.npz")
    for back in (fastrnn.load(tmp_path / "e.npz"), pickle.loads(pickle.dumps(emb))):
        assert type(back) is Embedding and back.padding_idx == 0
        np.testing.assert_array_equal(back.weight, emb.weight)


@pytest.mark.parametrize("kw", [dict(max_norm=1.0), dict(max_norm=0.5, norm_type=1.0),
                                dict(scale_grad_by_freq=True),
                                dict(max_norm=1.2, scale_grad_by_freq=True, padding_idx=2)])
def test_max_norm_and_scale_grad_by_freq_match_torch(kw):
    """torch.nn.Embedding's options: max_norm renormalises the rows a forward reads, in the
    table itself; scale_grad_by_freq divides each row's gradient by its id's count."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    ref = torch.nn.Embedding(7, 4, **kw).double()
    emb = Embedding(7, 4, dtype=np.float64, _weight=ref.weight.detach().numpy().copy(), **kw)
    ids = np.array([[1, 2, 1], [3, 1, 6]])
    want = ref(torch.tensor(ids))
    got = emb(ids)
    dy = np.random.default_rng(0).standard_normal(got.shape)
    want.backward(torch.tensor(dy))
    emb.backward(dy)
    np.testing.assert_allclose(got, want.detach().numpy(), rtol=0, atol=1e-15)
    np.testing.assert_allclose(emb.weight, ref.weight.detach().numpy(), rtol=0, atol=1e-15)
    np.testing.assert_allclose(emb.grads["weight"], ref.weight.grad.numpy(), rtol=0, atol=1e-15)
    assert Embedding(**emb.get_config()).get_config() == emb.get_config()


def test_torch_arguments_it_cannot_take_are_named():
    with pytest.raises(ValueError, match="_freeze=True: fastrnn has no frozen parameters"):
        Embedding(6, 4, 0, None, 2.0, False, False, None, True)
    with pytest.raises(ValueError, match="max_norm must be None or a positive finite number"):
        Embedding(6, 4, max_norm=-1.0)
    with pytest.raises(ValueError, match="norm_type must be a positive number"):
        Embedding(6, 4, max_norm=1.0, norm_type=0)

