"""Token estimate vs vLLM's own count (issue #3): 100 varied chat requests against the
real vLLM; the router's exact count (served model's tokenizer + chat template) must equal
the `prompt_tokens` vLLM reports. Also times the estimate itself.

Run: .venv/bin/python -m bench.token_estimate [--endpoint http://127.0.0.1:18000/v1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time

import openai

from bench.common import machine, sample_documents, stamp
from pipeline.config import Settings
from pipeline.router.tokens import Message, counter_for
from pipeline.runtime import tokenizer_dir

SNIPPETS = [
    "Failed password for invalid user admin from 203.0.113.9 port 22 ssh2",
    "Ünïcödé: пароль неверный — 失败的登录 — ログイン失敗 — 🔐🚨",
    "def f(x):\n\treturn {'a': [1, 2, 3]}  # code with tabs\n",
    "   leading and trailing spaces   \n\n\n  blank lines  ",
    "<script>alert(1)</script> <|im_start|> [link](javascript:void(0)) {{7*7}}",
    "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe -enc SQBFAFgA",
    "SELECT * FROM users WHERE id = '1' OR '1'='1' -- ",
    "a" * 300,
]


def varied_requests(count: int, seed: int = 42) -> list[list[Message]]:
    rng = random.Random(seed)
    docs = sample_documents()
    requests: list[list[Message]] = []
    for n in range(count):
        messages: list[Message] = []
        if n % 3:
            messages.append({"role": "system", "content": rng.choice(
                ["You are terse.", "You are a SOC analyst. Answer in JSON.", "Be helpful."])})
        turns = 1 + n % 3
        for turn in range(turns):
            parts = rng.sample(SNIPPETS, k=rng.randint(1, 3))
            if rng.random() < 0.5:
                parts.append(json.dumps(rng.choice(docs))[: rng.randint(50, 2000)])
            messages.append({"role": "user", "content": "\n".join(parts)})
            if turn < turns - 1:
                messages.append({"role": "assistant", "content": rng.choice(SNIPPETS)})
        requests.append(messages)
    return requests


async def run(endpoint: str, count: int) -> None:
    settings = Settings()
    counter = counter_for(tokenizer_dir(settings))
    client = openai.AsyncOpenAI(base_url=endpoint, api_key="EMPTY")
    mismatches, timings, sizes = [], [], []
    for messages in varied_requests(count):
        started = time.perf_counter()
        estimate = counter.count_chat(messages)
        timings.append((time.perf_counter() - started) * 1000)
        reply = await client.chat.completions.create(
            model=settings.llm.model_name, messages=messages,  # type: ignore[arg-type]
            max_tokens=1, temperature=0)
        reported = reply.usage.prompt_tokens if reply.usage else -1
        sizes.append(reported)
        if estimate != reported:
            mismatches.append((estimate, reported))
    await client.close()
    timings.sort()
    print(f"# token estimate vs vLLM — {stamp()} — {machine()}")
    print(f"{count} chat requests ({min(sizes)}–{max(sizes)} prompt tokens, median "
          f"{statistics.median(sizes):.0f}); mismatches: {len(mismatches)} {mismatches[:5]}")
    print(f"estimate time: p50 {timings[len(timings) // 2]:.3f} ms, p99 "
          f"{timings[int(len(timings) * 0.99) - 1]:.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default="http://127.0.0.1:18000/v1")
    parser.add_argument("--count", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(run(args.endpoint, args.count))


if __name__ == "__main__":
    main()
