"""The usage table against the model server's own counters: N streamed requests through
`secanalyst gateway`, a quarter of them dropped by the client mid-stream and some
cancelled by an in-process caller (the explain consumer's side), then Σ input_tokens and
Σ output_tokens of the run's rows vs the deltas of `vllm:prompt_tokens_total` and
`vllm:generation_tokens_total`. A private simulator (same counters, same streaming API as
vLLM, `continuous_usage_stats` included) so that no other engineer's requests pollute the
deltas. Kills are tested against a real vLLM (test_usage_reconcile_vllm.py): an abandoned
row charges the router's prompt count, which the simulator (words, not tokens) does not
share with it."""

from __future__ import annotations

import asyncio
import random
import uuid

from pipeline.cli.usage import create_api_key
from pipeline.config import Settings
from pipeline.router import ChatRequest
from pipeline.runtime import build_router, usage_writer_for
from pipeline.store.database import open_pool
from tests.integration.gateway_stack import GatewayStack
from tests.integration.test_usage_metering import (
    ask,
    routed_to,
    sim_counters,
    stack,
    stream_and_cut,
    stream_to_end,
    usage_rows,
)
from tests.reliability.conftest import full_size
from tests.reliability.report import report_row

__all__ = ["stack"]


async def cancelled_calls(settings: Settings, tenant: str, count: int) -> None:
    """Calls cancelled mid-stream, as a consumer stopped or timed out would (`settings`
    routed to the model server under test)."""
    pool = await open_pool(settings)
    writer = usage_writer_for(settings, pool)
    writer.start()
    router = build_router(settings, writer)
    try:
        for n in range(count):
            pieces: list[str] = []
            task = asyncio.create_task(router.complete(
                ChatRequest(tenant_id=tenant, max_tokens=120,
                            messages=[{"role": "user", "content": f"cancel me {n}"}]),
                on_delta=pieces.append))
            while len(pieces) < 5 + (7 * n) % 100 and not task.done():  # < max_tokens
                await asyncio.sleep(0.005)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await router.close()
        await writer.close()
        await pool.close()


def test_usage_table_reconciles_with_the_model_servers_counters(
        stack: GatewayStack) -> None:
    requests = full_size(12, 200)
    tenant = f"reconcile-{uuid.uuid4().hex[:6]}"
    _, key = create_api_key(stack.settings, tenant)
    rng = random.Random(7)
    prompt_before, generated_before = sim_counters(stack.sim)
    cut = 0
    for n in range(requests):
        body = ask(f"alert {n}: " + "failed logon " * rng.randint(1, 40),
                   rng.randint(60, 150))
        if n % 4 == 1:
            stream_and_cut(stack, key, body, cut_after=rng.randint(1, 6))
            cut += 1
        else:
            stream_to_end(stack, key, body)
    cancelled = max(2, requests // 10)
    asyncio.run(cancelled_calls(routed_to(stack.settings, stack.sim), tenant, cancelled))
    rows = usage_rows(stack.settings, tenant, requests + cancelled, timeout_s=30)
    prompt_after, generated_after = sim_counters(stack.sim)
    billed_in = sum(r["input_tokens"] for r in rows)
    billed_out = sum(r["output_tokens"] for r in rows)
    served_in = prompt_after - prompt_before
    served_out = generated_after - generated_before
    diff_pct = 100 * abs((billed_in + billed_out) - (served_in + served_out)) / (
        served_in + served_out)
    outcome = {"requests": requests + cancelled, "cut_by_client": cut,
               "cancelled_by_caller": cancelled, "usage_input": billed_in,
               "usage_output": billed_out, "server_prompt": int(served_in),
               "server_generation": int(served_out), "diff_pct": round(diff_pct, 3)}
    print(outcome)
    assert len(rows) == requests + cancelled
    assert [r["error_kind"] for r in rows].count("client_disconnect") == cut + cancelled
    assert abs(billed_in - served_in) <= 0.01 * served_in, outcome
    assert abs(billed_out - served_out) <= 0.01 * served_out, outcome
    report_row("usage reconciliation (streams cut by clients, calls cancelled, vs the "
               "model server's token counters)", outcome)
    # The headline figure (usage.reconcile_diff_pct) is the real vLLM's, with kills:
    # test_usage_reconcile_vllm.py.
