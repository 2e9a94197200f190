"""`python -m bench.vllm_sim --port P [--replicas N] [latency and fault flags]`: N replicas
on ports P, P+1, … in one process until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from dataclasses import fields

from bench.vllm_sim.engine import SimConfig
from bench.vllm_sim.server import SimCluster


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.vllm_sim", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="port of the first replica")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--model", "--served-model-name", dest="model", default="sim-model",
                        help="served model name")
    parser.add_argument("--strict-model", action="store_true",
                        help="answer 404 to a request naming another model (as vLLM)")
    for f in fields(SimConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = float if isinstance(f.default, float) else int
        parser.add_argument(flag, type=kind, default=f.default, dest=f.name)
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    config = {f.name: getattr(args, f.name) for f in fields(SimConfig)}
    cluster = SimCluster([SimConfig(**config) for _ in range(args.replicas)], host=args.host,
                         ports=[args.port + i for i in range(args.replicas)], model=args.model,
                         strict_model=args.strict_model)
    await cluster.start()
    for url in cluster.base_urls():
        print(f"vllm-sim serving {url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await cluster.stop()


def main(argv: list[str] | None = None) -> None:
    """On uvloop when it is installed (as vLLM's own server, uvicorn): a fraction of the
    CPU per request of the standard loop, and the simulator shares the machine with the
    router it serves."""
    args = parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        try:
            import uvloop
        except ImportError:
            asyncio.run(serve(args))
        else:
            uvloop.run(serve(args))


if __name__ == "__main__":
    main()
