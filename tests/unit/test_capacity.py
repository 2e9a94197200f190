"""The capacity plan's arithmetic (bench/capacity.py) on hand-made inputs."""

from __future__ import annotations

from bench.capacity import (
    Measured,
    PoolScaling,
    Published,
    calls_per_gpu_s,
    gpus_needed,
    render,
    thresholds,
)

GPU = Published("test GPU", 1280.0, 1024, 128, "quoted", "https://example.invalid")


def measured(tokens_in: float, tokens_out: float) -> Measured:
    return Measured(tokens_in, tokens_out, calls_per_distinct_alert=1.05,
                    calls_per_storm_alert=0.01, dates="2026-12-02")


def test_a_call_of_the_published_shape_runs_at_the_published_request_rate() -> None:
    assert calls_per_gpu_s(GPU, measured(1024, 128)) == 1280 / 128


def test_the_larger_dimension_of_a_call_sets_its_cost_and_a_smaller_one_is_not_credited() -> None:
    assert calls_per_gpu_s(GPU, measured(2048, 64)) == 1280 / 128 / 2  # twice the prompt
    assert calls_per_gpu_s(GPU, measured(512, 256)) == 1280 / 128 / 2  # twice the output


def test_gpus_round_up_and_never_fall_to_zero() -> None:
    assert gpus_needed(1000, 1.05, 10.0) == 105
    assert gpus_needed(1001, 1.0, 10.0) == 101
    assert gpus_needed(1, 0.01, 10.0) == 1


def test_the_queue_threshold_that_fits_the_ttft_target_follows_the_gpu_rate() -> None:
    scaling = PoolScaling(queue_threshold=4, ttft_target_s=2, min_replicas=2, max_replicas=16)
    rows = [line for line in thresholds(measured(1024, 128), scaling, [GPU])
            if line.startswith("| ")]
    # 10 calls/s per GPU: a queue of 4 adds 0.4 s; 2 s × 10 = 20 fit the target.
    assert any("0.4 s | 20 |" in row for row in rows), rows


def test_the_document_section_shows_the_arithmetic_inputs() -> None:
    section = render(measured(1000, 100), None)
    assert "| tokens per distinct alert | 1,155 |" in section  # (1000 + 100) × 1.05
    assert "kubectl not installed" in section
