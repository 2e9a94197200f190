"""Settings whose LLM is one vLLM simulator (bench/vllm_sim), for tests on their own."""

from __future__ import annotations

from pipeline.config import LLMPool, Settings


def llm_on_simulator(config: Settings, port: int) -> Settings:
    """`config` with its one LLM pool on the simulator at 127.0.0.1:`port`."""
    pool = LLMPool(endpoints=[f"http://127.0.0.1:{port}/v1"], max_context_tokens=8192)
    return config.model_copy(update={"llm": config.llm.model_copy(
        update={"pools": {"default": pool}})})
