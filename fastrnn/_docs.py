"""The numpydoc of the constructor arguments the layers and cells share, written once.

:func:`parameters` builds a class's ``Parameters`` section from the entries below, in the
order of its signature, so that ``help(fastrnn.LSTM)`` describes every argument.
"""

import inspect
import textwrap

#: name -> (type, description); "{...}" fields are filled per class (see ``parameters``), so
#: a brace of the text itself is doubled
ENTRIES = {
    "input_size": ("int", "I, the features of each step of ``x``."),
    "hidden_size": ("int", "H, the features of the hidden state{hout}."),
    "num_layers": ("int, default 1", "L, stacked layers: layer k > 0 runs on the output of "
                   "layer k - 1."),
    "nonlinearity": ("{{'tanh', 'relu'}}, default 'tanh'", "The activation of the new state."),
    "bias": ("bool, default True", "Whether there are ``bias_ih`` and ``bias_hh``."),
    "batch_first": ("bool, default False", "``x`` and ``out`` as (B, T, *) instead of "
                    "(T, B, *); the states stay (L*D, B, *)."),
    "dropout": ("float in [0, 1], default 0.0", "Dropout on the output of every layer but "
                "the last, in training mode (seeded by ``seed``)."),
    "bidirectional": ("bool, default False", "D = 2: each layer runs forward and backward "
                      "in time, ``out`` their outputs side by side (D*Hout features)."),
    "proj_size": ("int, default 0", "{proj}"),
    "device": ("None or 'cpu'", "PyTorch's argument, taken for its code."),
    "dtype": ("np.float32 (default) or np.float64", "Of the parameters and of what a call "
              "returns (inputs of other float dtypes are converted)."),
    "backend": ("{{'auto', 'cython', 'numba', 'numpy'}}, default 'auto'", "'auto': "
                "``FASTRNN_BACKEND`` if set, else the fastest one installed (cython, numba, "
                "then numpy, the reference); :func:`fastrnn.backends` says which are "
                "available and why not."),
    "seed": ("None, int >= 0, numpy.random.SeedSequence or Generator", "What draws the "
             "parameters' initialisation, U(-1/sqrt(H), 1/sqrt(H)) as in PyTorch{dropout}; "
             "None: fresh entropy."),
    "reverse": ("bool, default False", "Not in PyTorch: every layer runs from the last step "
                "to the first (ONNX's ``direction='reverse'``, Keras's ``go_backwards``), "
                "``out[t]`` aligned with ``x[t]``; excludes ``bidirectional`` (see "
                ":class:`fastrnn.layers.RNNBase`)."),
    "peepholes": ("bool, default False", "Not in PyTorch (ONNX's ``P``): the gates i, f and o "
                  "also read the cell state, through ``weight_peephole`` (3, H)."),
    "input_forget": ("bool, default False", "Not in PyTorch (ONNX's ``input_forget=1``): "
                     "f = 1 - i."),
    "reset_after": ("bool, default True", "False (not in PyTorch; ONNX's "
                    "``linear_before_reset=0``, Keras's ``reset_after=False``): the reset "
                    "gate applied to the state before its product, "
                    "``n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)``."),
    "clip": ("None or float > 0, default None", "Not in PyTorch (ONNX's cell clip): every "
             "gate's pre-activation bounded to [-clip, clip] before its activation; a number "
             "the dtype holds."),
    "activations": ("None or list of {n}", "Not in PyTorch (ONNX's ``activations``, Keras's "
                    "``activation`` and ``recurrent_activation``): {slots}, each a name of "
                    ":mod:`fastrnn.activations` or a tuple ``(name, alpha[, beta])``; None "
                    "keeps PyTorch's."),
}

#: the activations' slots of each cell
SLOTS = {"rnn": ("one entry", "f"),
         "gru": ("two entries", "f (r, z) and g (n)"),
         "lstm": ("three entries", "f (i, f, o), g (the candidate) and h (of the cell state)")}


def parameters(cls, cell, layer):
    """The ``Parameters`` section of ``cls``'s constructor (a layer or a cell of ``cell``)."""
    n, slots = SLOTS[cell]
    fields = {
        "n": n, "slots": slots + (" (a bidirectional layer: one list for both directions, or "
                                  "the forward's entries then the reverse's)" if layer else ""),
        "hout": " (and of ``out``, Hout, without ``proj_size``)" if layer else "",
        "proj": ("P > 0 (LSTMP): h_t projected to P features by ``weight_hr`` (P, H); Hout = "
                 "P, else H." if cell == "lstm" else "PyTorch's argument: 0, the only value "
                 "PyTorch's " + cls.__name__ + " takes."),
        "dropout": ", and the dropout masks" if layer else "",
    }
    lines = ["Parameters", "----------"]
    for name in inspect.signature(cls.__init__).parameters:
        if name == "self":
            continue
        kind, text = ENTRIES[name]
        lines.append(f"{name} : {kind.format(**fields)}")
        lines += textwrap.wrap(text.format(**fields), 88, initial_indent="    ",
                               subsequent_indent="    ")
    return "\n".join(lines)


def document(cls, cell, layer):
    """Append the ``Parameters`` section to ``cls``'s docstring (indented as the class's)."""
    indent = " " * 4
    section = "\n".join(indent + line if line else line
                        for line in parameters(cls, cell, layer).splitlines())
    cls.__doc__ = cls.__doc__.rstrip() + "\n\n" + section + "\n"
    return cls
