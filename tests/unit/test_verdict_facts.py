import pytest

from pipeline.analysis.explain import merge_attack
from pipeline.analysis.severity import band_for_level, bounded_severity


@pytest.mark.parametrize(("level", "band"), [(0, "info"), (3, "info"), (4, "low"), (7, "low"),
                                             (8, "medium"), (11, "medium"), (12, "high"),
                                             (14, "high"), (15, "critical"), (16, "critical")])
def test_rule_level_bands(level: int, band: str) -> None:
    assert band_for_level(level) == band


def test_model_moves_severity_at_most_one_band() -> None:
    assert bounded_severity(5, "critical")[0] == "medium"
    assert bounded_severity(15, "info")[0] == "high"
    assert bounded_severity(10, "medium") == ("medium", "rule level 10 band")
    assert "moved one band" in bounded_severity(10, "high")[1]


def test_wazuh_ids_kept_unknown_model_ids_dropped_names_from_catalog() -> None:
    merged, dropped = merge_attack(["T1110"], ["T1078"],
                                   ["T1110", "T9999", "not-an-id", "T1059.001"])
    assert dropped == 2
    by_id = {t.id: t for t in merged}
    assert list(by_id) == ["T1110", "T1078", "T1059.001"]
    assert by_id["T1110"].source == "wazuh" and by_id["T1110"].name == "Brute Force"
    assert "Credential Access" in by_id["T1110"].tactics
    assert by_id["T1059.001"].source == "model" and by_id["T1059.001"].name == "PowerShell"
