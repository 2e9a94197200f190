"""The URL (and what only looks like one) in the facts sentence, on the shapes Wazuh's
decoders really write: a web-log request with its query string and percent-encoding, a
proxy log's full http:// URL, ClamAV's `url` that is a file, VirusTotal's report link,
Defender's resource list. The sentence is built without the model, so a value in it must
be the alert's own, named for what it is; a value a parser cut out of a longer field
makes the sentence less than certain (pipeline/analysis/explain.py, confidence)."""

from __future__ import annotations

import json
import re
from typing import Any

from bench.verdict_scoring import alert_text, foreign_entities
from pipeline.analysis.explain import confidence
from pipeline.analysis.facts import build_facts, parsed_values
from pipeline.analysis.normalize import normalize
from schemas.messages import NormalizedAlert
from tests.unit.verdict_alerts import sample

URL_IN_SENTENCE = re.compile(r"\burl (\S+?)(?:, | —|\.$)")


def _alert(data: dict[str, Any], *, rule: str, description: str, groups: list[str],
           decoder: str, full_log: str) -> NormalizedAlert:
    document = {"timestamp": "2026-11-20T09:40:12.000+0000", "id": "1795170012.1",
                "rule": {"id": rule, "level": 6, "description": description,
                         "groups": groups},
                "agent": {"id": "004", "name": "proxy-01"}, "decoder": {"name": decoder},
                "data": data, "full_log": full_log, "location": "/var/log/squid/access.log"}
    return normalize(json.dumps(document).encode(), tenant_id="t")


def _no_foreign_entity(alert: NormalizedAlert, sentence: str) -> None:
    assert foreign_entities(sentence, alert_text(alert.raw, alert.full_log)) == []


def test_web_log_request_with_query_string_and_encoding_is_named_whole() -> None:
    for rule in ("31103", "31105", "31106", "31514"):  # SQLi, XSS, traversal, web shell
        alert = sample(rule)
        facts = build_facts(alert)
        url = str(alert.data["url"])
        assert "?" in url
        named = URL_IN_SENTENCE.search(facts.sentence)
        assert named is not None and named.group(1) == url  # not decoded, not cut
        assert parsed_values(alert, facts) == []
        _no_foreign_entity(alert, facts.sentence)


def _proxy_alert(url: str) -> NormalizedAlert:
    """A Squid access-log alert (Wazuh's squid decoder: srcip, action, id = status, url)."""
    return _alert({"srcip": "10.0.8.15", "action": "TCP_MISS", "id": "200", "url": url},
                  rule="35005", description="Squid: access to a suspicious URL",
                  groups=["squid"], decoder="squid-accesslog",
                  full_log=f"1795170012.100 51 10.0.8.15 TCP_MISS/200 812 GET {url} - "
                           "HIER_DIRECT/203.0.113.5 application/octet-stream")


def test_full_http_url_of_a_proxy_log_is_named_whole() -> None:
    url = "http://dl.evil.example.net/a/b.exe?id=7&r=%2Fetc%2Fpasswd#frag"
    alert = _proxy_alert(url)
    facts = build_facts(alert)
    named = URL_IN_SENTENCE.search(facts.sentence)
    assert named is not None and named.group(1) == url
    assert parsed_values(alert, facts) == []
    _no_foreign_entity(alert, facts.sentence)


def test_a_url_with_quotes_is_quoted_as_one_value() -> None:
    url = "/item.php?id=1'or'1'='1"
    alert = _alert({"srcip": "198.51.100.77", "protocol": "GET", "id": "200", "url": url},
                   rule="31103", description="SQL injection attempt.",
                   groups=["web", "accesslog", "attack", "sql_injection"],
                   decoder="web-accesslog",
                   full_log=f'198.51.100.77 - - [20/Nov/2026:09:40:12 +0000] "GET {url} '
                            'HTTP/1.1" 200 12 "-" "sqlmap/1.8"')
    assert f"url “{url}”" in build_facts(alert).sentence


def test_a_url_too_long_to_show_is_left_out_not_cut() -> None:
    sentence = build_facts(_proxy_alert("http://x.example/" + "a" * 200)).sentence
    assert "url" not in sentence.split("—")[1] and "x.example" not in sentence


def test_clamav_url_is_the_scanned_file_and_extra_data_the_signature() -> None:
    alert = sample("52502")  # clamd: "/srv/share/…/Invoice_2026-11.pdf.exe: Win.Trojan… FOUND"
    facts = build_facts(alert)
    assert alert.entities.url is None
    assert facts.file == "/srv/share/finance/Invoice_2026-11.pdf.exe"
    assert alert.entities.malware == "Win.Trojan.Agent-1044012"
    assert "file /srv/share/finance/Invoice_2026-11.pdf.exe" in facts.sentence
    assert "url" not in facts.sentence and "malware Win.Trojan.Agent-1044012" in facts.sentence
    assert parsed_values(alert, facts) == []


def test_virustotal_permalink_is_named_as_its_report() -> None:
    alert = sample("87105")
    facts = build_facts(alert)
    assert f"VirusTotal report {alert.entities.url}" in facts.sentence
    assert " url " not in facts.sentence


def test_defender_file_and_url_are_parsed_values_and_lower_the_confidence() -> None:
    alert = sample("62123")  # path: "file:_C:\…\mm64.exe; webfile:_…|http://…/mm64.zip|pid:…"
    facts = build_facts(alert)
    assert "url http://203.0.113.91/t/mm64.zip," in facts.sentence
    assert parsed_values(alert, facts) == ["C:\\Users\\Public\\Downloads\\mm64.exe",
                                           "http://203.0.113.91/t/mm64.zip"]
    _no_foreign_entity(alert, facts.sentence)
    assert confidence(grounding=None, facts_parsed=True) == 0.9
    assert confidence(grounding=None) == 1.0
