"""An encoder-decoder (sequence-to-sequence) model with attention, built from elman's recurrent
layers, with a hand-written backward.

The architecture is Luong et al. (2015)'s global attention::

    source ids x (N, S) --Embedding--> encoder RNN (stacked, optionally bidirectional)
        --> memory M (S, N, D*H) and final states --Bridge--> decoder initial state
    target ids y_in (N, T) = [BOS y_1 .. y_k] --Embedding--> decoder RNN (stacked) --> d_t
    c_t = Attention(d_t, M)                     masked by the source lengths
    h~_t = tanh(W_c [c_t; d_t] + b_c)           the attentional state    (``combine``)
    logits_t = W_o h~_t + b_o                   one score per target token   (``output``)

and the loss is the token-level cross entropy of ``logits`` against ``y_out = [y_1 .. y_k EOS]``,
ignoring padding (``CrossEntropyLoss(ignore_index=pad_id)``: the mean over real tokens).

Why this arrangement: the attention reads the decoder's output, not its input, so under teacher
forcing the decoder's inputs are all known in advance and the decoder runs as *one* whole-sequence
call of the recurrent layer (its fast path: one GEMM for all input projections, the compiled
kernels), and its backward is the layer's own. Bahdanau's additive score is offered as a score
function in the same arrangement (``attention="additive"``). Luong's *input feeding* (h~_{t-1}
concatenated to the next input) would make every step depend on the previous attention, forcing a
step-by-step decoder in training too; it is not implemented. Decoding (greedy and beam search,
:mod:`elman.beam`) runs the decoder one step at a time through :meth:`Seq2Seq.decode_step`.

The bridge (:class:`Bridge`) maps the encoder's final states to the decoder's initial states:
decoder layer ``l`` reads encoder layer ``l`` when both have as many layers, otherwise the
encoder's top layer; the two directions of a bidirectional encoder are concatenated. When that
width ``D*H_enc`` equals the decoder's hidden size the states are copied (``bridge="copy"``),
otherwise (or with ``bridge="linear"``) they are projected: ``h0 = tanh(W_h s + b_h)`` and, for
an LSTM, ``c0 = W_c s_c + b_c``. ``bridge="zeros"`` starts the decoder from zeros.

Shapes are batch-major for token arrays (the layout of padded data sets): ``src`` (N, S),
``tgt_in`` (N, T), logits (N, T, V). Lengths count real tokens, 1..S and 1..T; positions past a
length hold ``pad_id``.

>>> import numpy as np
>>> m = Seq2Seq(10, 12, embedding_dim=8, hidden_size=16, seed=0)
>>> src = np.array([[4, 5, 6], [7, 8, 0]]); src_len = np.array([3, 2])
>>> tgt_in = np.array([[1, 5, 9], [1, 3, 0]]); tgt_len = np.array([3, 2])
>>> logits = m(src, tgt_in, src_len, tgt_len)
>>> logits.shape
(2, 3, 12)
>>> m.backward(np.ones_like(logits)) is None
True
"""
from __future__ import annotations

import contextlib

import numpy as np

from . import _validate, registry
from .attention import ATTENTION_KINDS, Attention
from .layers import Embedding, Linear, _saved
from .losses import CrossEntropyLoss
from .module import Module

__all__ = ["Seq2Seq", "Bridge", "BRIDGES"]

BRIDGES = ("auto", "copy", "linear", "zeros")


@contextlib.contextmanager
def _sizes_named(owner: str, **sizes):
    """A sub-module's refusal of its sizes (too large for this machine, say) in the words of
    the arguments the user gave: ``owner``'s ``sizes``."""
    try:
        yield
    except ValueError as e:
        given = ", ".join(f"{k}={v}" for k, v in sizes.items() if v is not None)
        raise ValueError(f"{owner}: {given}: {e}") from None


def _seeds(seed, count: int) -> list:
    """``count`` independent seeds for the sub-modules from one ``seed`` (None stays None:
    fresh entropy for each)."""
    if seed is None:
        return [None] * count
    rng = _validate.rng(seed)
    return [int(s) for s in rng.integers(0, 2**31 - 1, size=count)]


@registry.register("module")
class Bridge(Module):
    """Encoder final states -> decoder initial states (see the module docstring).

    ``forward(h_n, c_n=None)``: ``h_n`` (D*L_enc, N, H_enc) as a recurrent layer returns it,
    ``c_n`` likewise for an LSTM encoder (or None). Returns ``(h0, c0)`` with h0 (L_dec, N, H_dec)
    and c0 (L_dec, N, H_dec) when ``decoder_cell_state`` (an LSTM decoder), else None.
    ``backward(dh0, dc0)`` returns ``(dh_n, dc_n)``; a state read by several decoder layers gets
    the sum of their gradients. An LSTM decoder after a GRU/RNN encoder starts from c0 = 0.
    """

    def __init__(self, encoder_layers: int, decoder_layers: int, encoder_hidden: int,
                 decoder_hidden: int, bidirectional: bool = False, mode: str = "auto",
                 encoder_cell_state: bool = False, decoder_cell_state: bool = False,
                 dtype=np.float32, seed=None):
        super().__init__()
        self.encoder_layers = _validate.positive_int("encoder_layers", encoder_layers)
        self.decoder_layers = _validate.positive_int("decoder_layers", decoder_layers)
        self.encoder_hidden = _validate.positive_int("encoder_hidden", encoder_hidden)
        self.decoder_hidden = _validate.positive_int("decoder_hidden", decoder_hidden)
        self.bidirectional = _validate.flag("bidirectional", bidirectional)
        self.encoder_cell_state = _validate.flag("encoder_cell_state", encoder_cell_state)
        self.decoder_cell_state = _validate.flag("decoder_cell_state", decoder_cell_state)
        self.dtype = _validate.float_dtype(dtype)
        if mode not in BRIDGES:
            raise ValueError(f"mode (the bridge) must be one of {BRIDGES}, got {mode!r}")
        width = self.width
        if mode == "copy" and width != self.decoder_hidden:
            raise ValueError(f"bridge='copy' needs the encoder's state width (directions x "
                             f"hidden = {width}) to equal the decoder's hidden size "
                             f"({self.decoder_hidden}); use bridge='linear'")
        if mode == "auto":
            mode = "copy" if width == self.decoder_hidden else "linear"
        self.mode = mode
        s_h, s_c = _seeds(seed, 2)
        if mode == "linear":
            with _sizes_named("Bridge", encoder_hidden=self.encoder_hidden,
                              decoder_hidden=self.decoder_hidden):
                self.hidden = Linear(width, self.decoder_hidden, activation="tanh",
                                     dtype=dtype, seed=s_h)
                if self.encoder_cell_state and self.decoder_cell_state:
                    self.cell = Linear(width, self.decoder_hidden, dtype=dtype, seed=s_c)
        self._cache = None

    @property
    def width(self) -> int:
        return (2 if self.bidirectional else 1) * self.encoder_hidden

    def config(self) -> dict:
        return dict(encoder_layers=self.encoder_layers, decoder_layers=self.decoder_layers,
                    encoder_hidden=self.encoder_hidden, decoder_hidden=self.decoder_hidden,
                    bidirectional=self.bidirectional, mode=self.mode,
                    encoder_cell_state=self.encoder_cell_state,
                    decoder_cell_state=self.decoder_cell_state, dtype=self.dtype.name)

    def _sources(self) -> np.ndarray:
        """The encoder layer each decoder layer reads."""
        if self.encoder_layers == self.decoder_layers:
            return np.arange(self.decoder_layers)
        return np.full(self.decoder_layers, self.encoder_layers - 1)

    def _gather(self, state: np.ndarray) -> np.ndarray:
        """(D*L_enc, N, H) -> (L_dec, N, D*H): each decoder layer's source, directions side by
        side."""
        D = 2 if self.bidirectional else 1
        LD, N, H = state.shape
        s = state.reshape(self.encoder_layers, D, N, H)[self._sources()]   # (L_dec, D, N, H)
        return np.ascontiguousarray(s.transpose(0, 2, 1, 3).reshape(self.decoder_layers, N,
                                                                    D * H))

    def _scatter(self, ds: np.ndarray, N: int) -> np.ndarray:
        """The adjoint of :meth:`_gather`: (L_dec, N, D*H) -> (D*L_enc, N, H), summing where one
        encoder layer feeds several decoder layers."""
        D = 2 if self.bidirectional else 1
        H = self.encoder_hidden
        out = np.zeros((self.encoder_layers, D, N, H), self.dtype)
        np.add.at(out, self._sources(), ds.reshape(self.decoder_layers, N, D, H)
                  .transpose(0, 2, 1, 3))
        return out.reshape(self.encoder_layers * D, N, H)

    def forward(self, h_n, c_n=None):
        h_n = np.asarray(h_n, self.dtype)
        N = h_n.shape[1]
        shape = (self.decoder_layers, N, self.decoder_hidden)
        has_c = self.encoder_cell_state and c_n is not None
        self._save_for_backward((N, has_c))
        if self.mode == "zeros":
            h0 = np.zeros(shape, self.dtype)
            c0 = np.zeros(shape, self.dtype) if self.decoder_cell_state else None
            return h0, c0
        s_h = self._gather(h_n)
        if self.mode == "copy":
            h0 = s_h
        else:
            h0 = self.hidden(s_h)
        c0 = None
        if self.decoder_cell_state:
            if not has_c:
                c0 = np.zeros(shape, self.dtype)
            elif self.mode == "copy":
                c0 = self._gather(np.asarray(c_n, self.dtype))
            else:
                c0 = self.cell(self._gather(np.asarray(c_n, self.dtype)))
        return h0, c0

    def backward(self, dh0, dc0=None):
        N, has_c = _saved(self)
        self._cache = None
        if self.mode == "zeros":
            zeros = np.zeros(((2 if self.bidirectional else 1) * self.encoder_layers, N,
                              self.encoder_hidden), self.dtype)
            return zeros, (zeros.copy() if has_c else None)
        ds_h = dh0 if self.mode == "copy" else self.hidden.backward(dh0)
        dh_n = self._scatter(np.asarray(ds_h, self.dtype), N)
        dc_n = None
        if has_c:
            if dc0 is None or not self.decoder_cell_state:
                dc_n = np.zeros_like(dh_n)
            else:
                ds_c = dc0 if self.mode == "copy" else self.cell.backward(dc0)
                dc_n = self._scatter(np.asarray(ds_c, self.dtype), N)
        return dh_n, dc_n


@registry.register("module")
class Seq2Seq(Module):
    """Encoder-decoder with attention; see the module docstring for the equations.

    Parameters
    ----------
    source_vocab, target_vocab
        Vocabulary sizes (ids in ``[0, V)``), special ids included.
    embedding_dim
        Width of both embeddings.
    hidden_size
        Hidden units per direction of the encoder; ``decoder_hidden`` (default: the encoder's
        state width, ``D * hidden_size``, so the bridge can copy) for the decoder.
    cell
        ``"lstm"``, ``"gru"`` or ``"rnn"`` (any name in ``registry.table("recurrent")``), for
        both; ``decoder_cell`` overrides the decoder's.
    encoder_layers, decoder_layers, bidirectional, dropout
        As the recurrent layers' ``num_layers``, ``bidirectional`` (encoder only) and inter-layer
        ``dropout``.
    attention
        ``"general"``, ``"dot"``, ``"additive"`` or ``"none"`` (a plain encoder-decoder: logits
        straight from the decoder's states).
    bridge
        ``"auto"``, ``"copy"``, ``"linear"`` or ``"zeros"`` (:class:`Bridge`).
    pad_id, bos_id, eos_id
        The special target ids (padding also in the source); padding embeds to zero.
    """

    def __init__(self, source_vocab: int, target_vocab: int, embedding_dim: int = 64,
                 hidden_size: int = 128, cell: str = "lstm", encoder_layers: int = 1,
                 decoder_layers: int = 1, bidirectional: bool = True,
                 decoder_hidden: int | None = None, decoder_cell: str | None = None,
                 attention: str = "general", attention_size: int | None = None,
                 bridge: str = "auto", dropout: float = 0.0, pad_id: int = 0, bos_id: int = 1,
                 eos_id: int = 2, dtype=np.float32, seed=None):
        super().__init__()
        self.source_vocab = _validate.positive_int("source_vocab", source_vocab)
        self.target_vocab = _validate.positive_int("target_vocab", target_vocab)
        self.embedding_dim = _validate.positive_int("embedding_dim", embedding_dim)
        self.hidden_size = _validate.positive_int("hidden_size", hidden_size)
        self.encoder_layers = _validate.positive_int("encoder_layers", encoder_layers)
        self.decoder_layers = _validate.positive_int("decoder_layers", decoder_layers)
        self.bidirectional = _validate.flag("bidirectional", bidirectional)
        D = 2 if self.bidirectional else 1
        self.decoder_hidden = (D * self.hidden_size if decoder_hidden is None else
                               _validate.positive_int("decoder_hidden", decoder_hidden))
        cells = registry.table("recurrent")
        for name, value in (("cell", cell), ("decoder_cell", decoder_cell)):
            if value is not None and value not in cells:
                raise ValueError(f"{name} must be one of {sorted(cells)}, got {value!r}")
        self.cell = cell
        self.decoder_cell = cell if decoder_cell is None else decoder_cell
        if attention not in ATTENTION_KINDS + ("none",):
            raise ValueError(f"attention must be one of {ATTENTION_KINDS + ('none',)}, got "
                             f"{attention!r}")
        self.attention_kind = attention
        self.dropout = _validate.probability("dropout", dropout)
        smallest = min(self.source_vocab, self.target_vocab)
        for name, value in (("pad_id", pad_id), ("bos_id", bos_id), ("eos_id", eos_id)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
                    or not 0 <= value < smallest:
                raise ValueError(f"{name} must be an id in [0, {smallest - 1}] (both "
                                 f"vocabularies), got {value!r}")
        if len({int(pad_id), int(bos_id), int(eos_id)}) != 3:
            raise ValueError(f"pad_id, bos_id and eos_id must differ, got {pad_id}, {bos_id}, "
                             f"{eos_id}")
        self.pad_id, self.bos_id, self.eos_id = int(pad_id), int(bos_id), int(eos_id)
        self.dtype = _validate.float_dtype(dtype)
        seeds = _seeds(seed, 8)
        with _sizes_named("Seq2Seq", source_vocab=self.source_vocab,
                          target_vocab=self.target_vocab, embedding_dim=self.embedding_dim,
                          hidden_size=self.hidden_size, decoder_hidden=self.decoder_hidden, encoder_layers=self.encoder_layers,
                          decoder_layers=self.decoder_layers, attention_size=attention_size):
            self._build(cells, bridge, attention, attention_size, seeds)
        self.attention_size = (self.attention.attention_size
                               if attention == "additive" else None)
        self.loss_fn = CrossEntropyLoss(ignore_index=self.pad_id)
        self.epoch = 0
        self._cache = None

    def _build(self, cells, bridge, attention, attention_size, seeds) -> None:
        """The sub-modules (each checks that the machine can hold its parameters)."""
        D, H_enc = (2 if self.bidirectional else 1), self.hidden_size
        E, H, Hd, K = self.embedding_dim, H_enc, self.decoder_hidden, D * H_enc
        dtype = self.dtype
        self.source_embedding = Embedding(self.source_vocab, E, padding_idx=self.pad_id,
                                          dtype=dtype, seed=seeds[0])
        self.target_embedding = Embedding(self.target_vocab, E, padding_idx=self.pad_id,
                                          dtype=dtype, seed=seeds[1])
        self.encoder = cells[self.cell](E, H, num_layers=self.encoder_layers,
                                        bidirectional=self.bidirectional, dropout=self.dropout,
                                        dtype=dtype, seed=seeds[2])
        self.decoder = cells[self.decoder_cell](E, Hd, num_layers=self.decoder_layers,
                                                dropout=self.dropout, dtype=dtype,
                                                seed=seeds[3])
        self.bridge = Bridge(self.encoder_layers, self.decoder_layers, H, Hd,
                             bidirectional=self.bidirectional, mode=bridge,
                             encoder_cell_state=self._has_cell(self.encoder),
                             decoder_cell_state=self._has_cell(self.decoder), dtype=dtype,
                             seed=seeds[4])
        if attention != "none":
            self.attention = Attention(Hd, K, kind=attention, attention_size=attention_size,
                                       dtype=dtype, seed=seeds[5])
            self.combine = Linear(K + Hd, Hd, activation="tanh", dtype=dtype, seed=seeds[6])
        self.output = Linear(Hd, self.target_vocab, dtype=dtype, seed=seeds[7])

    @staticmethod
    def _has_cell(layer) -> bool:
        return bool(layer.eq.has_cell)

    def config(self) -> dict:
        cfg = dict(source_vocab=self.source_vocab, target_vocab=self.target_vocab,
                   embedding_dim=self.embedding_dim, hidden_size=self.hidden_size,
                   cell=self.cell, encoder_layers=self.encoder_layers,
                   decoder_layers=self.decoder_layers, bidirectional=self.bidirectional,
                   decoder_hidden=self.decoder_hidden, decoder_cell=self.decoder_cell,
                   attention=self.attention_kind, bridge=self.bridge.mode,
                   dropout=self.dropout, pad_id=self.pad_id, bos_id=self.bos_id,
                   eos_id=self.eos_id, dtype=self.dtype.name)
        if self.attention_size is not None:
            cfg["attention_size"] = self.attention_size
        return cfg

    def extra_repr(self) -> str:
        return (f"{self.source_vocab} -> {self.target_vocab}, cell={self.cell!r}, "
                f"attention={self.attention_kind!r}")

    # -- helpers ---------------------------------------------------------------------------
    def _tokens(self, name: str, ids, vocab: int) -> np.ndarray:
        arr = np.asarray(ids)
        if arr.dtype.kind not in "iu" or arr.ndim != 2 or 0 in arr.shape:
            raise ValueError(f"{name} must be a non-empty (N, T) array of integer ids, got "
                             f"{'dtype ' + str(arr.dtype) if arr.dtype.kind not in 'iu' else ''}"
                             f" shape {arr.shape}")
        if arr.min() < 0 or arr.max() >= vocab:
            raise ValueError(f"{name} must hold ids in [0, {vocab - 1}], got values from "
                             f"{int(arr.min())} to {int(arr.max())}")
        return arr

    def _lengths(self, name: str, lengths, ids: np.ndarray) -> np.ndarray:
        N, T = ids.shape
        if lengths is None:        # every sequence ends where its padding starts
            lengths = np.maximum((ids != self.pad_id).sum(axis=1), 1)
        return _validate.lengths(lengths, N, T, f"Seq2Seq ({name})")

    def _state(self, h, c):
        return (h, c) if self._has_cell(self.decoder) else h

    # -- encoder ---------------------------------------------------------------------------
    def encode(self, src, src_lengths=None):
        """Run the encoder and the bridge. Returns ``(memory, src_lengths, state0)``: memory
        (S, N, D*H), the lengths used, and the decoder's initial state (h0, or (h0, c0))."""
        src = self._tokens("src", src, self.source_vocab)
        src_lengths = self._lengths("src_lengths", src_lengths, src)
        emb = self.source_embedding(src.T)                          # (S, N, E)
        out, state = self.encoder(emb, lengths=src_lengths)
        h_n, c_n = state if self._has_cell(self.encoder) else (state, None)
        h0, c0 = self.bridge(h_n, c_n)
        return out, src_lengths, self._state(h0, c0)

    def _head(self, dec_out, memory, src_lengths):
        """Attention, attentional state and logits for decoder outputs (T, N, Hd)."""
        if self.attention_kind == "none":
            return self.output(dec_out)
        context = self.attention(dec_out, memory, src_lengths)
        combined = self.combine(np.concatenate([context, dec_out], axis=2))
        return self.output(combined)

    # -- teacher forcing -------------------------------------------------------------------
    def forward(self, src, tgt_in, src_lengths=None, tgt_lengths=None):
        """Logits (N, T, V) for every target position, the decoder reading ``tgt_in`` (teacher
        forcing). Lengths default to the count of non-padding ids."""
        memory, src_lengths, state0 = self.encode(src, src_lengths)
        tgt_in = self._tokens("tgt_in", tgt_in, self.target_vocab)
        if tgt_in.shape[0] != memory.shape[1]:
            raise ValueError(f"src and tgt_in must hold as many sequences, got "
                             f"{memory.shape[1]} and {tgt_in.shape[0]}")
        tgt_lengths = self._lengths("tgt_lengths", tgt_lengths, tgt_in)
        emb = self.target_embedding(tgt_in.T)                       # (T, N, E)
        dec_out, _ = self.decoder(emb, state0, lengths=tgt_lengths)
        logits = self._head(dec_out, memory, src_lengths)           # (T, N, V)
        self._save_for_backward((memory.shape, dec_out.shape))
        return np.ascontiguousarray(logits.transpose(1, 0, 2))

    def backward(self, dlogits):
        """Backpropagate ``dL/dlogits`` (N, T, V) through the whole model; parameter gradients
        accumulate into ``Param.grad``. Returns None (the inputs are integer ids)."""
        memory_shape, dec_shape = _saved(self)
        self._cache = None
        dlogits = np.asarray(dlogits, self.dtype)
        if dlogits.shape != (dec_shape[1], dec_shape[0], self.target_vocab):
            raise ValueError(f"Seq2Seq.backward: expected dlogits of shape "
                             f"{(dec_shape[1], dec_shape[0], self.target_vocab)}, got "
                             f"{dlogits.shape}")
        d = self.output.backward(np.ascontiguousarray(dlogits.transpose(1, 0, 2)))
        if self.attention_kind == "none":
            ddec, dmemory = d, np.zeros(memory_shape, self.dtype)
        else:
            dcat = self.combine.backward(d)
            K = memory_shape[2]
            dquery, dmemory = self.attention.backward(dcat[:, :, :K])
            ddec = dcat[:, :, K:] + dquery
        # decoder (whole sequence), then the bridge into the encoder's final states
        demb, dstate0 = self.decoder.backward(ddec, None)
        self.target_embedding.backward(demb)
        dh0, dc0 = dstate0 if self._has_cell(self.decoder) else (dstate0, None)
        dh_n, dc_n = self.bridge.backward(dh0, dc0)
        dstate_n = (dh_n, dc_n) if self._has_cell(self.encoder) else dh_n
        demb, _ = self.encoder.backward(dmemory, dstate_n)
        self.source_embedding.backward(demb)
        return None

    def loss(self, src, tgt_in, tgt_out, src_lengths=None, tgt_lengths=None):
        """Forward and the token-level cross entropy (mean over the non-padding ids of
        ``tgt_out``). Returns ``(value, dlogits)``; pass ``dlogits`` to :meth:`backward`."""
        logits = self.forward(src, tgt_in, src_lengths, tgt_lengths)
        return self.loss_fn(logits, self._tokens("tgt_out", tgt_out, self.target_vocab))

    # -- one decoding step -----------------------------------------------------------------
    def decode_step(self, tokens, state, memory, src_lengths):
        """One decoder step for decoding: ``tokens`` (N,) the previous ids, ``state`` the
        decoder state. Returns ``(log_probs (N, V), new state, attention weights (N, S) or
        None)``. Forward only (it overwrites what a training forward saved)."""
        emb = self.target_embedding(np.asarray(tokens)[None, :])    # (1, N, E)
        dec_out, state = self.decoder(emb, state)
        logits = self._head(dec_out, memory, src_lengths)[0]        # (N, V)
        z = logits - logits.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        weights = None if self.attention_kind == "none" else self.attention.weights[:, 0]
        return logp, state, weights
