"""Windows Defender's `path` is a list of resources: the facts name its file and its
download URL, never the whole list (whose `|pid:…` tail would read as part of a URL)."""

from __future__ import annotations

from pipeline.analysis.entities import defender_resources, extract_entities

LIST = ("file:_C:\\Users\\Public\\Downloads\\mm64.exe; webfile:_C:\\Users\\Public\\Downloads"
        "\\mm64.exe|http://203.0.113.91/t/mm64.zip|pid:6620,ProcessStart:134081344912345678")


def _defender(path: str) -> dict[str, object]:
    return {"data": {"win": {"eventdata": {"path": path, "threat Name": "HackTool:Win32/X"}}}}


def test_resource_list_gives_the_file_and_the_download_url() -> None:
    entities = extract_entities(_defender(LIST), None)
    assert entities.file_path == "C:\\Users\\Public\\Downloads\\mm64.exe"
    assert entities.url == "http://203.0.113.91/t/mm64.zip"


def test_webfile_alone_and_no_url() -> None:
    assert defender_resources("webfile:_C:\\t\\a.tmp|https://e.org/a.txt|pid:1") == (
        "C:\\t\\a.tmp", "https://e.org/a.txt")
    assert defender_resources("file:_D:\\x.dll") == ("D:\\x.dll", None)


def test_a_plain_path_is_left_as_it_is() -> None:
    entities = extract_entities(_defender("C:\\Windows\\Temp\\file:_x.exe"), None)
    assert entities.file_path == "C:\\Windows\\Temp\\file:_x.exe"
    assert defender_resources("C:\\x.exe") == (None, None)


def test_a_process_or_registry_resource_names_no_file() -> None:
    assert defender_resources("process:_pid:4242,ProcessStart:1; regkey:_HKLM\\Run") == (
        None, None)
