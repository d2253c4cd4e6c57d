"""KV pages of one engine and its prefix cache, as vLLM's KV cache manager keeps them (vLLM 0.32,
vllm/v1/core/kv_cache_manager.py and block_pool.py).

Pages of ``block_size`` tokens are taken when a step needs slots for its tokens and returned when a request finishes or
is preempted. With prefix caching, a request's tokens are hashed in units (the Mooncake trace's ``hash_ids``: one id per
512 prompt tokens; a session's history in page-sized units): a unit whose tokens have been computed (a prompt's as its
chunks run, a reply's when the request finishes) is kept under its id, shared by every request whose prompt starts with
the same ids, and when no request holds it any more it stays cached (its pages evictable) until pages are needed. Only
whole units are cached, as vLLM caches only full blocks. Pages are taken in the order of vLLM's free queue
(block_pool.FreeKVCacheBlockQueue): from its head, where the pages least recently freed are, evicting a cached unit
reached there; a request's pages go back to its tail, the request's own tail first, so the tail of a prompt is evicted
before its head.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence


class KVPool:
    """Pages in vLLM's free queue order and the cached copies of hash units: a unit computed twice is cached twice, as
    vLLM keeps every block under its hash (``BlockHashToBlockMap``), and a hit takes its first copy still cached."""

    def __init__(self, blocks: int, unit_blocks: int) -> None:
        self.total = blocks
        self.free = blocks  # pages in the queue that hold nothing cached
        self.unit_blocks = unit_blocks  # pages per hash unit; 0: no prefix cache
        self.copies: dict[int, dict[int, None]] = {}  # unit id -> its cached copies, oldest first
        self.unit_of: dict[int, int] = {}  # copy -> unit id
        self.holders: dict[int, int] = {}  # copy -> requests holding it
        self.idle: dict[int, int] = {}  # copy nobody holds -> the generation of its place in the queue
        self.queue: deque[list[int]] = deque([[-1, blocks]])  # [-1, n]: n pages caching nothing; [copy, generation]
        self.serial = 0

    @property
    def available(self) -> int:
        """Pages a request can be given now: the free ones and those of cached copies nobody holds."""
        return self.free + len(self.idle) * self.unit_blocks

    @property
    def held(self) -> int:
        """Pages held by requests (KV in use)."""
        return self.total - self.available

    @property
    def queued(self) -> int:
        """Pages in the free queue, counted entry by entry (equal to ``available`` unless the bookkeeping is wrong)."""
        return sum(e[1] if e[0] < 0 else self.unit_blocks for e in self.queue if e[0] < 0 or self.idle.get(e[0]) == e[1])

    def take(self, pages: int) -> None:
        """Give ``pages`` to a request from the head of the free queue, evicting a cached copy reached there (all of its
        pages: they are cached together; what the request does not need stays at the head, caching nothing)."""
        while pages > 0:
            head = self.queue[0]
            if head[0] < 0:
                k = min(pages, head[1])
                head[1] -= k
                self.free -= k
                pages -= k
                if head[1] == 0:
                    self.queue.popleft()
                continue
            self.queue.popleft()
            c = head[0]
            if self.idle.get(c) == head[1]:  # else taken by a hit since it was queued
                del self.idle[c]
                u = self.unit_of.pop(c)
                del self.copies[u][c]
                if not self.copies[u]:
                    del self.copies[u]
                self.queue.appendleft([-1, self.unit_blocks])
                self.free += self.unit_blocks

    def hit_units(self, ids: Sequence[int], max_units: int) -> tuple[int, int]:
        """(leading units of ``ids`` that are cached, how many of their first copies nobody holds now), at most ``max_units``."""
        hits = idle = 0
        for u in ids[:max_units]:
            if u not in self.copies:
                break
            hits += 1
            idle += next(iter(self.copies[u])) in self.idle
        return hits, idle

    def hold(self, ids: Sequence[int]) -> list[int]:
        """A request shares these cached units (the first copy of each): their pages leave the free queue. The copies held."""
        held = []
        for u in ids:
            c = next(iter(self.copies[u]))
            self.idle.pop(c, None)
            self.holders[c] = self.holders.get(c, 0) + 1
            held.append(c)
        return held

    def register(self, u: int) -> int:
        """A request has computed unit ``u`` in its own pages: they are cached under its id (another copy if it is cached
        already). The copy."""
        self.serial += 1
        c = self.serial
        self.copies.setdefault(u, {})[c] = None
        self.unit_of[c], self.holders[c] = u, 1
        return c

    def release(self, held: Sequence[int], private_pages: int, full_pages: int = 0) -> None:
        """A request lets go of its pages, tail first (``free_blocks(reversed(blocks))``): pages that hold no whole block
        go to the head of the free queue, to be reused first; whole blocks, which vLLM has hashed, to its end in the
        request's order from the tail: ``full_pages`` of them that no later prompt can be known to share (a reply's, or
        a prompt's without hash ids), then its cached copies from the last. A copy another request holds stays out.
        Without a prefix cache every page goes to the head."""
        full_pages = max(min(full_pages, private_pages), 0) if self.unit_blocks else 0
        if private_pages - full_pages:
            self.queue.appendleft([-1, private_pages - full_pages])
        if full_pages:
            self.queue.append([-1, full_pages])
        self.free += private_pages
        for c in reversed(held):
            left = self.holders[c] - 1
            if left:
                self.holders[c] = left
                continue
            del self.holders[c]
            self.serial += 1
            self.idle[c] = self.serial
            self.queue.append([c, self.serial])
