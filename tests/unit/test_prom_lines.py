"""The router's line parser against prometheus_client's full text parser."""

import math
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.router.prom_lines import Sample, samples

# Saved from the shared vLLM's /metrics (SmolLM2, vLLM on CPU).
VLLM_METRICS = (Path(__file__).parents[1] / "data" / "vllm-metrics.txt").read_text()

TRICKY = """\
# HELP vllm:num_requests_running Number of requests {running} "now".
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="old-model"} 2.0
vllm:num_requests_running{engine="0",model_name="new-model"} 3 1733112000000
vllm:num_requests_running{model_name="a } b, c=\\"d\\"",path="C:\\\\x\\ny"} +Inf
vllm:num_requests_running{engine="1",} -Inf
vllm:num_requests_running NaN
vllm:num_requests_running_by_reason{reason="capacity"} 9.0
#vllm:num_requests_running 1000
vllm:num_requests_running{ engine = "2" , model_name="m" } 1e-3
"""


def reference(text: str, names: set[str]) -> list[Sample]:
    return [Sample(s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(text)
            for s in family.samples if s.name in names]


def assert_same(ours: list[Sample], theirs: list[Sample]) -> None:
    assert [(s.name, s.labels) for s in ours] == [(s.name, s.labels) for s in theirs]
    for mine, other in zip(ours, theirs, strict=True):
        assert mine.value == other.value or (math.isnan(mine.value) and math.isnan(other.value))


def test_every_sample_of_a_real_vllm_scrape_matches_prometheus_client() -> None:
    names = {s.name for f in text_string_to_metric_families(VLLM_METRICS) for s in f.samples}
    assert "vllm:num_requests_running" in names and len(names) > 50
    theirs = reference(VLLM_METRICS, names)
    assert len(theirs) > 400
    assert_same(list(samples(VLLM_METRICS, names)), theirs)


def test_router_names_of_a_real_vllm_scrape_match_prometheus_client() -> None:
    names = {"vllm:num_requests_running", "vllm:num_requests_waiting",
             "vllm:kv_cache_usage_perc", "vllm:prefix_cache_hits_total",
             "vllm:prefix_cache_queries_total"}
    ours = list(samples(VLLM_METRICS, names))
    assert {s.name for s in ours} == names
    assert_same(ours, reference(VLLM_METRICS, names))


def test_escapes_special_values_timestamps_comments_and_models() -> None:
    ours = list(samples(TRICKY, {"vllm:num_requests_running"}))
    assert_same(ours, reference(TRICKY, {"vllm:num_requests_running"}))
    assert [s.labels.get("model_name") for s in ours[:2]] == ["old-model", "new-model"]
    assert ours[2].labels == {"model_name": 'a } b, c="d"', "path": "C:\\x\ny"}
    assert ours[1].value == 3.0  # the timestamp is not the value
    assert (ours[2].value, ours[3].value) == (math.inf, -math.inf)
    assert math.isnan(ours[4].value) and ours[5].value == 1e-3
    assert len(ours) == 6  # neither the comment nor the longer …_by_reason name


@pytest.mark.parametrize("line", [
    'vllm:num_requests_running{engine="0" 1.0',
    'vllm:num_requests_running{engine=0} 1.0',
    'vllm:num_requests_running{engine="0"} one',
    'vllm:num_requests_running',
    'vllm:num_requests_running{engine="0\\"} 1.0',
])
def test_a_malformed_wanted_line_raises(line: str) -> None:
    with pytest.raises(ValueError, match="malformed"):
        list(samples(line + "\n", {"vllm:num_requests_running"}))


def test_lines_of_other_names_are_not_parsed() -> None:
    text = 'other_metric{ garbage\nvllm:num_requests_running 4\n'
    assert list(samples(text, {"vllm:num_requests_running"})) == [
        Sample("vllm:num_requests_running", {}, 4.0)]
