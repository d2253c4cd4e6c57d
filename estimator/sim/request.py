"""One simulated request: what the client sent, and where the engine has got with it."""

from __future__ import annotations

from collections.abc import Sequence

WAITING, PREFILL, DECODE, DONE = range(4)


class Req:
    """A request of ``prompt`` tokens forced to ``output`` tokens (``ignore_eos``, as bench runs them), arriving at
    ``arrival_s``; ``ids``: its prompt's hash units (prefix caching); ``follow``: the next turn of its session, sent
    ``think_s`` after this one's last token. Times in seconds from the start of the run."""

    __slots__ = ("rid", "arrival_s", "prompt", "output", "ids", "follow", "think_s", "state", "computed", "emitted", "private",
                 "units", "registered", "ext", "c0", "e0", "g0", "f0", "phase", "epoch", "first_s", "last_s", "finish_s",
                 "preemptions", "cached")  # fmt: skip

    def __init__(self, rid: int, arrival_s: float, prompt: int, output: int, ids: Sequence[int] | None = None,
                 follow: Req | None = None, think_s: float = 0.0) -> None:  # fmt: skip
        self.rid, self.arrival_s, self.prompt, self.output = rid, arrival_s, prompt, output
        self.ids, self.follow, self.think_s = ids, follow, think_s
        self.state, self.computed, self.emitted, self.private, self.registered, self.ext = WAITING, 0, 0, 0, 0, 0
        self.units: list[int] = []
        self.c0 = self.e0 = self.g0 = self.f0 = self.phase = self.epoch = 0  # a decoding request's position (instance.py)
        self.first_s = self.last_s = self.finish_s = -1.0
        self.preemptions, self.cached = 0, -1  # cached: prompt tokens its first admission found in the prefix cache

    @property
    def tokens(self) -> int:
        """Tokens the engine must have computed before it samples the next one: the prompt and the output so far."""
        return self.prompt + self.emitted
