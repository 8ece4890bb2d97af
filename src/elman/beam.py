"""Decoding an encoder-decoder (:class:`elman.Seq2Seq`): batched beam search, and greedy search
as its width-1 case.

Each of the ``N`` source sequences keeps ``beam_width`` (B) hypotheses; the decoder runs once
per step on all ``N*B`` of them (row ``n*B + b``). At every step each live hypothesis is
extended by every target id but padding and ``bos_id``; the B best of the ``B*V`` candidates of
each source (by summed log probability) survive, and the decoder states follow their
hypotheses. A hypothesis that emitted ``eos_id`` is finished: it stays in the beam with its
score, extended only by padding at no cost. The search stops when every hypothesis of every
source is finished or after ``max_len`` steps (an unfinished hypothesis is returned as it
stands).

The winner of each beam is the hypothesis with the highest length-normalised score
``log p(y) / |y|**length_penalty`` (|y| counts the emitted ids, EOS included): 0 ranks by raw
probability, which favours short outputs; 1 by the mean log probability per id. Pruning during
the search uses the raw scores. With ``beam_width=1`` this is greedy decoding: the arg-max id at
every step.

>>> import numpy as np, elman
>>> m = elman.Seq2Seq(8, 9, embedding_dim=4, hidden_size=5, seed=0).eval()
>>> src = np.array([[3, 4, 5], [6, 7, 0]])
>>> out = beam_search(m, src, beam_width=3, max_len=6)
>>> len(out.sequences), all(len(s) <= 6 for s in out.sequences), out.scores.shape
(2, True, (2,))
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _validate
from .grad_mode import no_grad

__all__ = ["beam_search", "greedy_decode", "Decoded"]


@dataclass
class Decoded:
    """The result of a search: per source, the best hypothesis's ids (without BOS and EOS),
    its summed log probability ``log_prob`` and its length-normalised ``scores``."""
    sequences: list
    log_prob: np.ndarray
    scores: np.ndarray


def _gather(state, rows: np.ndarray):
    """Decoder state(s) (L, N, H) with their batch rows picked (and repeated) by ``rows``."""
    if isinstance(state, tuple):
        return tuple(s[:, rows] for s in state)
    return state[:, rows]


@no_grad()
def beam_search(model, src, src_lengths=None, beam_width: int = 5, max_len: int = 50,
                length_penalty: float = 1.0) -> Decoded:
    """Batched beam search; see the module docstring. ``src`` (N, S) ids, ``src_lengths`` (N,)
    (default: the count of non-padding ids). The model runs in evaluation mode (no dropout),
    under :func:`elman.no_grad`, and is put back in its previous mode afterwards."""
    B = _validate.positive_int("beam_width", beam_width)
    max_len = _validate.positive_int("max_len", max_len)
    if not np.isfinite(length_penalty) or length_penalty < 0:
        raise ValueError(f"length_penalty must be a non-negative number, got {length_penalty!r}")
    was_training = model.training
    model.eval()
    try:
        memory, lengths, state = model.encode(src, src_lengths)
        N, V = memory.shape[1], model.target_vocab
        rep = np.repeat(np.arange(N), B)               # row n*B + b reads source n
        memory, lengths, state = memory[:, rep], lengths[rep], _gather(state, rep)
        tokens = np.full(N * B, model.bos_id, np.int64)
        scores = np.zeros((N, B))
        scores[:, 1:] = -np.inf                        # one live hypothesis at the start:
        finished = np.zeros((N, B), bool)              # B copies would fill the beam with
        produced = np.zeros((N, B), np.int64)          # the same candidates
        history = np.zeros((N, B, 0), np.int64)
        for _ in range(max_len):
            logp, state, _ = model.decode_step(tokens, state, memory, lengths)
            logp = logp.reshape(N, B, V).astype(np.float64)
            # padding and begin-of-sequence are never outputs
            logp[:, :, [model.pad_id, model.bos_id]] = -np.inf
            # a finished hypothesis continues only with padding, at no cost
            logp[finished] = -np.inf
            logp[finished, model.pad_id] = 0.0
            candidates = (scores[:, :, None] + logp).reshape(N, B * V)
            top = np.argsort(-candidates, axis=1, kind="stable")[:, :B]   # (N, B)
            beam, ids = top // V, top % V
            scores = np.take_along_axis(candidates, top, axis=1)
            history = np.concatenate([np.take_along_axis(history, beam[:, :, None], axis=1),
                                      ids[:, :, None]], axis=2)
            was_done = np.take_along_axis(finished, beam, axis=1)
            produced = np.take_along_axis(produced, beam, axis=1) + ~was_done
            finished = was_done | (ids == model.eos_id)
            state = _gather(state, (np.arange(N)[:, None] * B + beam).ravel())
            tokens = ids.ravel()
            if finished.all():
                break
    finally:
        model.train(was_training)
    normalised = scores / np.maximum(produced, 1) ** length_penalty
    best = np.argmax(normalised, axis=1)
    sequences = []
    for n, b in enumerate(best):
        seq = history[n, b, :produced[n, b]].tolist()
        if seq and seq[-1] == model.eos_id:
            seq = seq[:-1]
        sequences.append(seq)
    idx = np.arange(N)
    return Decoded(sequences, scores[idx, best], normalised[idx, best])


def greedy_decode(model, src, src_lengths=None, max_len: int = 50) -> Decoded:
    """Greedy decoding: the most probable id at every step (beam search of width 1)."""
    return beam_search(model, src, src_lengths, beam_width=1, max_len=max_len,
                       length_penalty=0.0)
