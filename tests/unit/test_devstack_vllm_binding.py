"""The dev vLLM's OpenMP binding (pipeline/devstack/vllm.py): "all" gives the model every
core this process may use and reserves none; "auto" leaves vLLM's own choice."""

from __future__ import annotations

import os

from pipeline.config import Settings
from pipeline.devstack.vllm import cpu_binding_env


def test_all_binds_every_allowed_core_and_reserves_none() -> None:
    env = cpu_binding_env("all")
    cores = sorted(os.sched_getaffinity(0))
    assert [int(c) for c in env["VLLM_CPU_OMP_THREADS_BIND"].split(",")] == cores
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"


def test_auto_leaves_vllm_its_own_binding() -> None:
    assert cpu_binding_env("auto") == {}


def test_an_explicit_list_is_passed_on() -> None:
    assert cpu_binding_env("0-3")["VLLM_CPU_OMP_THREADS_BIND"] == "0-3"


def test_the_setting_defaults_to_all_and_reads_the_environment(monkeypatch) -> None:
    assert Settings().dev.vllm_cpu_bind == "all"
    monkeypatch.setenv("SECANALYST_DEV__VLLM_CPU_BIND", "auto")
    assert Settings().dev.vllm_cpu_bind == "auto"
