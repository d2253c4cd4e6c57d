"""A step's time: the one interface the simulator reads (instance.StepTime), and the simplest step model behind it.

``step_s(decode_seqs, decode_kv_tokens, chunk_tokens, chunk_context)``: seconds of one engine step that advances
``decode_seqs`` decoding sequences whose KV (the tokens each new token attends to, summed over them) is
``decode_kv_tokens``, and computes ``chunk_tokens`` prompt tokens whose mean attended length is ``chunk_context`` (a
chunk of c tokens after p computed ones attends p + c/2 on average). gpu.py gives it from the per-operator serving model
(what ``fleetcal predict --gpu`` uses), cpu.py from the CPU step model (``predict --device cpu``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AffineSteps:
    """A step of fixed cost plus a cost per token computed and per KV token attended: for schedules worked out by hand."""

    fixed_s: float
    per_token_s: float = 0.0
    per_kv_token_s: float = 0.0

    def __call__(self, decode_seqs: int, decode_kv_tokens: float, chunk_tokens: int, chunk_context: float) -> float:
        attended = decode_kv_tokens + chunk_tokens * chunk_context
        return self.fixed_s + self.per_token_s * (decode_seqs + chunk_tokens) + self.per_kv_token_s * attended
