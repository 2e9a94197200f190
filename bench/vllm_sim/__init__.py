"""A vLLM simulator for router tests and benchmarks on a 2-core machine: the OpenAI chat
API and vLLM's /metrics names over a virtual-time latency model. Never used by the
product. Run: `python -m bench.vllm_sim --port 8101 [--replicas 3] [--max-num-seqs 8] ...`."""

from bench.vllm_sim.engine import Engine, SimConfig
from bench.vllm_sim.server import SimCluster, build_app

__all__ = ["Engine", "SimCluster", "SimConfig", "build_app"]
