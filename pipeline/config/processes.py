"""Settings of the processes: the worker, and the embedded dev stack (`secanalyst dev`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.config.base import Frozen


class WorkerSettings(Frozen):
    """`secanalyst run` and `secanalyst wazuh-writeback`: /livez, /readyz and /metrics
    (pipeline/worker_health.py) on this address. None: off (several workers may share a
    host); 0: any free port, logged at start."""

    health_host: str = "127.0.0.1"
    health_port: int | None = Field(default=None, ge=0, le=65535)


class DevStackSettings(Frozen):
    postgres_port: int = 54329
    kafka_port: int = 19092
    # The embedded broker's storage: "s3" (SeaweedFS on local disk, durable across
    # restarts) or "memory" (~2x faster produce, a restart loses everything).
    kafka_storage: Literal["memory", "s3"] = "s3"
    seaweedfs_port: int = 18330  # the first of the eight consecutive ports it uses
    vllm_port: int = 18000
    vllm_kv_cache_gib: int = 1
    vllm_max_model_len: int = 4096
    # The dev vLLM's OpenMP threads: "all" cores (the default: on 2 cores, vLLM's "auto"
    # leaves the model one), "auto" (vLLM's own), or a VLLM_CPU_OMP_THREADS_BIND list.
    vllm_cpu_bind: str = "all"
    vllm_version: str = "0.32.0"
