"""A request-level simulation of serving instances as vLLM's V1 engine schedules them, step by step (``fleetcal simulate``).

engine.py: the engine's rules (token budget, sequences, KV pages); kv.py: KV pages and the prefix cache; instance.py: one
engine's scheduler and steps; fleet.py: routers, pools and the event loop; steps.py, gpu.py, cpu.py: a step's time;
traffic.py: requests; results.py: the latency statistics and saturation.
"""
