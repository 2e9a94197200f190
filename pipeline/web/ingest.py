"""POST /ingest/wazuh: Wazuh alerts over HTTP → alerts.raw, behind per-tenant API keys.

The tenant comes from the API key (the gateway's keys, `secanalyst apikeys create`), never
from the body. The answer is 202 `{"accepted": n}` only after Kafka acknowledged all n
messages; any refusal (401, 400 naming the item, 413, 415, 503) publishes nothing: every
alert is checked first (bounded JSON: depth, number size; `ingest.max_alert_bytes` per
alert, 413 naming the item), and only then is anything produced. Served
on its own by `secanalyst ingest-server` — it needs Kafka and the key table, not the
router — and `create_ingest_router` can be mounted into another app (whose lifespan sets
`app.state.ingest_resources` and `use_key_authenticator`).

No `from __future__ import annotations` here: FastAPI resolves the dependency aliases at
definition time."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Depends, FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, generate_latest

from pipeline.config import Settings
from pipeline.kafka.alert_guard import AlertRefused
from pipeline.kafka.producer import AlertSink, open_alert_sink
from pipeline.web.app_state import ResourceFactory, opened, opening
from pipeline.web.auth import ApiKeyAuthenticator, KeyAuthenticator
from pipeline.web.bearer import BearerTenant, use_key_authenticator
from pipeline.web.errors import GatewayError
from pipeline.web.ingest_body import BodyError, gunzip_limited, parse_alerts, read_limited
from pipeline.web.openai_api import error_body

_REQUESTS = Counter("secanalyst_ingest_requests", "POST /ingest/wazuh answers, by outcome.",
                    ["outcome"])
_ALERTS = Counter("secanalyst_ingest_alerts", "Alerts accepted (acknowledged by Kafka).",
                  ["tenant"])


@dataclass(frozen=True)
class IngestResources:
    auth: KeyAuthenticator
    sink: AlertSink


@asynccontextmanager
async def open_ingest_resources(settings: Settings) -> AsyncIterator[IngestResources]:
    from pipeline.store.apikeys import load_pepper
    from pipeline.store.database import open_pool

    pool = await open_pool(settings)
    try:
        async with open_alert_sink(settings, settings.kafka.topics.raw,
                                   priority="live") as sink:
            auth = ApiKeyAuthenticator(pool, load_pepper(settings),
                                       cache_s=settings.gateway.api_key_cache_s)
            yield IngestResources(auth=auth, sink=sink)
    finally:
        await pool.close()




def _resources(request: Request) -> IngestResources:
    found: IngestResources = opened(request, "ingest_resources")
    return found


Resources = Annotated[IngestResources, Depends(_resources)]


def _refusal(exc: BodyError) -> GatewayError:
    kind = "request_too_large" if exc.status_code == 413 else "invalid_request_error"
    return GatewayError(exc.status_code, exc.message, kind, param=exc.param)


def create_ingest_router(settings: Settings) -> APIRouter:
    limits = settings.ingest
    router = APIRouter()

    @router.post("/ingest/wazuh", status_code=202)
    async def ingest_wazuh(request: Request, res: Resources, tenant_id: BearerTenant,
                           content_type: Annotated[str, Header()] = "application/json",
                           content_encoding: Annotated[str, Header()] = "identity",
                           ) -> JSONResponse:
        declared = request.headers.get("content-length", "")
        try:
            if declared.isdigit() and int(declared) > limits.max_body_bytes:
                # Refused from the header alone: the body is never read.
                raise BodyError(413, f"request body is larger than {limits.max_body_bytes} "
                                     "bytes")
            body = await read_limited(request.stream(), limits.max_body_bytes)
            encoding = content_encoding.strip().lower()
            if encoding == "gzip":
                body = gunzip_limited(body, limits.max_decompressed_bytes)
            elif encoding not in {"identity", ""}:
                raise BodyError(415, f"unsupported content encoding {encoding!r}; "
                                     "send gzip or none")
            elif len(body) > limits.max_decompressed_bytes:
                raise BodyError(413, "request body is larger than "
                                     f"{limits.max_decompressed_bytes} bytes")
            alerts = parse_alerts(body, content_type, max_alert_bytes=limits.max_alert_bytes)
        except BodyError as exc:
            raise _refusal(exc) from exc
        if len(alerts) > limits.max_alerts_per_request:
            raise GatewayError(413, f"{len(alerts)} alerts in one request; the limit is "
                                    f"{limits.max_alerts_per_request}", "request_too_large")
        try:
            await res.sink.publish(tenant_id, alerts)
        except AlertRefused as exc:  # the sink's own check (parse_alerts checked first)
            raise GatewayError(exc.http_status, exc.reason, "request_too_large") from exc
        except (KafkaError, TimeoutError) as exc:
            raise GatewayError(503, "the alert queue did not acknowledge the alerts; retry "
                                    "(safe: alerts are de-duplicated by id)", "overloaded_error",
                               headers={"Retry-After": "5"}) from exc
        _REQUESTS.labels("accepted").inc()
        _ALERTS.labels(tenant_id).inc(len(alerts))
        return JSONResponse({"accepted": len(alerts), "tenant": tenant_id},
                            status_code=202)

    return router


def create_ingest_app(
        settings: Settings,
        open_resources: ResourceFactory[IngestResources] = open_ingest_resources) -> FastAPI:
    lifespan = opening(settings, open_resources, "ingest_resources",
                       then=lambda app, resources: use_key_authenticator(app, resources.auth))
    app = FastAPI(title="secanalyst alert ingest", lifespan=lifespan, docs_url=None,
                  redoc_url=None)

    async def on_refusal(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GatewayError)
        _REQUESTS.labels(exc.kind).inc()
        return JSONResponse(error_body(exc.message, exc.kind, param=exc.param),
                            status_code=exc.status_code, headers=exc.headers)

    app.add_exception_handler(GatewayError, on_refusal)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    app.include_router(create_ingest_router(settings))
    return app
