"""KV pages of one engine and its prefix cache, as vLLM's KV cache manager keeps them (vLLM 0.32,
vllm/v1/core/kv_cache_manager.py and block_pool.py).

Pages of ``block_size`` tokens are taken when a step needs slots for its tokens and returned when a request finishes or
is preempted. With prefix caching, a request's tokens are hashed in units (the Mooncake trace's ``hash_ids``: one id per
512 prompt tokens; a session's history in page-sized units): a unit whose tokens have been computed (a prompt's as its
chunks run, a reply's when the request finishes) is kept under its id, shared by every request whose prompt starts with
the same ids, and when no request holds it any more it stays cached (its pages evictable) until pages are needed. Only
whole units are cached, as vLLM caches only full blocks. Pages are taken from the never-cached ones first, then by
evicting cached units least recently released first (vLLM's free queue puts a request's pages back tail first, so the
tail of a prompt is evicted before its head: ``release`` does the same).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


class KVPool:
    """Free pages, cached units held by requests (``active``: id -> holders) and cached units no request holds (``idle``)."""

    def __init__(self, blocks: int, unit_blocks: int) -> None:
        self.total = blocks
        self.free = blocks
        self.unit_blocks = unit_blocks  # pages per hash unit; 0: no prefix cache
        self.active: dict[int, int] = {}
        self.idle: OrderedDict[int, None] = OrderedDict()

    @property
    def available(self) -> int:
        """Pages a request can be given now: the free ones and those of cached units nobody holds."""
        return self.free + len(self.idle) * self.unit_blocks

    @property
    def held(self) -> int:
        """Pages held by requests (KV in use)."""
        return self.total - self.available

    def take(self, pages: int) -> None:
        """Give ``pages`` to a request, evicting the least recently released cached units when the free ones run out."""
        while pages > self.free:
            self.idle.popitem(last=False)
            self.free += self.unit_blocks
        self.free -= pages

    def hit_units(self, ids: Sequence[int], max_units: int) -> tuple[int, int]:
        """(leading units of ``ids`` that are cached, how many of those no request holds now), at most ``max_units``."""
        hits = idle = 0
        for u in ids[:max_units]:
            if u in self.active:
                hits += 1
            elif u in self.idle:
                hits, idle = hits + 1, idle + 1
            else:
                break
        return hits, idle

    def hold(self, ids: Sequence[int]) -> None:
        """A request shares these cached units: their pages are no longer evictable."""
        for u in ids:
            if u in self.idle:
                del self.idle[u]
            self.active[u] = self.active.get(u, 0) + 1

    def register(self, u: int) -> bool:
        """A request has just computed unit ``u`` in its own pages: cache it under its id (True) unless it is cached already,
        in which case the request keeps its copy private (vLLM does not cache a block twice)."""
        if u in self.active or u in self.idle:
            return False
        self.active[u] = 1
        return True

    def release(self, units: Sequence[int], private_pages: int) -> None:
        """A request lets go of its cached units (tail first) and returns its private pages."""
        for u in reversed(units):
            left = self.active[u] - 1
            if left:
                self.active[u] = left
            else:
                del self.active[u]
                self.idle[u] = None
        self.free += private_pages
