"""Offline engines: vLLM's ``LLM`` and Hugging Face ``generate``, behind one small interface.

An engine is started once per engine configuration; a batch of B is B requests submitted
together. Prompts are token ids drawn from an isolated, seeded RNG; output lengths are
forced (vLLM: ``ignore_eos``; transformers: ``min_new_tokens == max_new_tokens``). Measured
outputs are sampled at temperature 1.0, top_p 1.0, as vLLM's throughput benchmark does
(``--temperature 0`` for greedy); correctness checks (``complete``) are always greedy.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Protocol

from bench.timing import sync_device


@dataclass(frozen=True)
class EngineConfig:
    """Everything that needs an engine restart when it changes."""

    model: str  # checkpoint directory or Hugging Face id
    device: str  # "cpu" or "cuda"
    engine: str = "vllm"
    load_format: str = "auto"  # "auto" or "dummy" (random weights from config.json)
    dtype: str = "bfloat16"
    max_model_len: int = 2048
    max_num_seqs: int = 256
    kv_cache_gb: float | None = None  # vLLM on CPU: KV-cache size; None: vLLM's default on GPU
    enforce_eager: bool = True  # CUDA graphs off (vLLM) / no torch.compile (transformers)
    quantization: str | None = None  # vLLM --quantization, e.g. "fp8" (weights quantized at load)
    kv_cache_dtype: str = "auto"  # "auto" or "fp8"
    enable_prefix_caching: bool = False  # off in sweeps: repeated prompts must not hit a cache
    enable_expert_parallel: bool = False
    max_num_batched_tokens: int | None = None
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    data_parallel_size: int = 1
    distributed_executor_backend: str | None = None  # e.g. "ray" for several nodes
    seed: int = 0
    temperature: float = 1.0  # sampling of measured outputs; vLLM's throughput benchmark samples at 1.0, top_p 1.0

    @property
    def num_gpus(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size * self.data_parallel_size


def make_prompts(n: int, input_len: int, vocab_size: int, seed: int = 0) -> list[list[int]]:
    """``n`` prompts of exactly ``input_len`` token ids, from an RNG of their own (no global state)."""
    rng = random.Random(seed)
    low = min(1000, vocab_size // 4)
    return [[rng.randrange(low, vocab_size - 1) for _ in range(input_len)] for _ in range(n)]


class Engine(Protocol):
    vocab_size: int

    def generate(self, prompts: list[list[int]], output_len: int) -> tuple[float, int]:
        """Run the prompts to exactly ``output_len`` new tokens each; return (seconds, output tokens)."""
        ...

    def complete(self, text: str, max_tokens: int) -> str:
        """Greedy completion of a text prompt."""
        ...

    def close(self) -> None: ...


class VllmEngine:
    """vLLM's offline ``LLM`` API."""

    def __init__(self, cfg: EngineConfig):
        from pathlib import Path

        from vllm import LLM

        kwargs: dict = dict(
            model=cfg.model,
            dtype=cfg.dtype,
            max_model_len=cfg.max_model_len,
            max_num_seqs=cfg.max_num_seqs,
            enforce_eager=cfg.enforce_eager,
            load_format=cfg.load_format,
            seed=cfg.seed,
            enable_prefix_caching=cfg.enable_prefix_caching,
            kv_cache_dtype=cfg.kv_cache_dtype,
            tensor_parallel_size=cfg.tensor_parallel_size,
            pipeline_parallel_size=cfg.pipeline_parallel_size,
            data_parallel_size=cfg.data_parallel_size,
        )
        if cfg.distributed_executor_backend:
            kwargs["distributed_executor_backend"] = cfg.distributed_executor_backend
        if cfg.quantization:
            kwargs["quantization"] = cfg.quantization
        if cfg.enable_expert_parallel:
            kwargs["enable_expert_parallel"] = True
        if cfg.max_num_batched_tokens:
            kwargs["max_num_batched_tokens"] = cfg.max_num_batched_tokens
        if cfg.kv_cache_gb is not None:
            kwargs["kv_cache_memory_bytes"] = int(cfg.kv_cache_gb * 2**30)
        model_dir = Path(cfg.model)
        self.has_tokenizer = not model_dir.is_dir() or any(model_dir.glob("tokenizer*"))
        if not self.has_tokenizer:
            kwargs["skip_tokenizer_init"] = True
        self.llm = LLM(**kwargs)
        self.temperature = cfg.temperature
        self.vocab_size = self.llm.llm_engine.model_config.get_vocab_size()

    def _params(self, output_len: int, ignore_eos: bool = True, temperature: float | None = None):
        from vllm import SamplingParams

        return SamplingParams(
            temperature=self.temperature if temperature is None else temperature,
            top_p=1.0,
            max_tokens=output_len,
            ignore_eos=ignore_eos,
            detokenize=self.has_tokenizer,
        )

    def generate(self, prompts: list[list[int]], output_len: int) -> tuple[float, int]:
        inputs = [{"prompt_token_ids": p} for p in prompts]
        t0 = time.perf_counter()
        outs = self.llm.generate(inputs, self._params(output_len), use_tqdm=False)
        seconds = time.perf_counter() - t0
        return seconds, sum(len(o.outputs[0].token_ids) for o in outs)

    def complete(self, text: str, max_tokens: int) -> str:
        out = self.llm.generate([text], self._params(max_tokens, ignore_eos=False, temperature=0.0), use_tqdm=False)
        return out[0].outputs[0].text

    def close(self) -> None:
        import gc

        del self.llm
        gc.collect()


class TransformersEngine:
    """Hugging Face ``generate`` in static batches, KV cache on: the usual baseline.

    With ``enforce_eager=False`` the KV cache is static, and on a GPU transformers compiles the
    decoding forward pass itself (its ``CompileConfig``: inductor, ``reduce-overhead``, CUDA graphs),
    its documented fast path; on a CPU the static cache runs uncompiled. A new batch size or output
    length compiles again, so warm-ups use the measured length.
    """

    def __init__(self, cfg: EngineConfig):
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        torch.manual_seed(cfg.seed)
        dtype = getattr(torch, cfg.dtype)
        if cfg.load_format == "dummy":
            config = AutoConfig.from_pretrained(cfg.model)
            with torch.device(cfg.device):  # random weights made where they run: fast for 8B on a GPU
                self.model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        else:
            self.model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=dtype)
        self.device = cfg.device
        self.temperature = cfg.temperature
        self.model.to(cfg.device).eval()
        self.static_shapes = not cfg.enforce_eager
        if self.static_shapes:
            self.model.generation_config.cache_implementation = "static"
        self.vocab_size = int(self.model.config.get_text_config().vocab_size)
        self.tokenizer = None
        try:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(cfg.model)
        except (OSError, ValueError):
            pass

    def generate(self, prompts: list[list[int]], output_len: int) -> tuple[float, int]:
        import torch

        ids = torch.tensor(prompts, dtype=torch.long, device=self.device)  # equal lengths: no padding
        mask = torch.ones_like(ids)
        sync_device(self.device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=output_len,
                min_new_tokens=output_len,
                do_sample=self.temperature > 0,
                temperature=self.temperature if self.temperature > 0 else None,
                top_p=1.0,
                top_k=0,
                pad_token_id=0,
            )
        sync_device(self.device)
        seconds = time.perf_counter() - t0
        return seconds, int((out.shape[1] - ids.shape[1]) * out.shape[0])

    def complete(self, text: str, max_tokens: int) -> str:
        import torch

        if self.tokenizer is None:
            raise ValueError("this checkpoint has no tokenizer")
        enc = self.tokenizer(text, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model.generate(**enc, max_new_tokens=max_tokens, do_sample=False, temperature=None, top_p=None, top_k=None)
        return self.tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    def close(self) -> None:
        del self.model


def start_engine(cfg: EngineConfig) -> Engine:
    """Start the engine that ``cfg.engine`` names."""
    if cfg.engine == "vllm":
        return VllmEngine(cfg)
    if cfg.engine == "transformers":
        return TransformersEngine(cfg)
    raise ValueError(f"unknown engine {cfg.engine!r}; use vllm or transformers")


def refused_request(exc: BaseException) -> bool:
    """Whether the engine refused a request (a prompt longer than its context, a bad parameter) and is still usable:
    a ValueError, or vLLM's client errors (its VLLMValidationError is not a ValueError)."""
    if isinstance(exc, ValueError):
        return True
    try:
        from vllm.exceptions import VLLMClientError  # only where vLLM is installed; the engine that raised it is vLLM's
    except ImportError:
        return False
    return isinstance(exc, VLLMClientError)


def close_quietly(engine: Engine) -> None:
    """Close ``engine``, ignoring a failure to: shutting down after a failure, that failure is what gets recorded."""
    try:
        engine.close()
    except Exception:  # shutting down after a failure: the failure is what gets recorded
        pass
