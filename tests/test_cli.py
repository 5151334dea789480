"""python -m persistence: each command end to end on a temp store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import persistence
from persistence.cli import main

END = "2026-03-01"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def demo_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    code, out, _ = run(capsys, "demo", "--url", url, "--conversations", "60", "--seed", "3", "--end", END)
    assert code == 0 and "Wrote 60 threads" in out
    return url


def _strip_file_ids(line: str) -> dict[str, object]:
    record = json.loads(line)
    for f in record["files"]:
        f.pop("upload_id")  # file ids follow from owner + hash; upload ids are random
    return record


def test_demo_is_deterministic_by_seed(tmp_path: Path, capsys: pytest.CaptureFixture[str], demo_url: str) -> None:
    other = f"sqlite:///{tmp_path / 'other.db'}"
    run(capsys, "demo", "--url", other, "--conversations", "60", "--seed", "3", "--end", END)
    run(capsys, "export", "--url", demo_url, "--out", str(tmp_path / "a.jsonl"))
    run(capsys, "export", "--url", other, "--out", str(tmp_path / "b.jsonl"))
    a = [_strip_file_ids(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    b = [_strip_file_ids(line) for line in (tmp_path / "b.jsonl").read_text().splitlines()]
    assert a == b and len(a) == 60
    run(capsys, "demo", "--url", f"sqlite:///{tmp_path / 'c.db'}", "--conversations", "60", "--seed", "4", "--end", END)
    run(capsys, "export", "--url", f"sqlite:///{tmp_path / 'c.db'}", "--out", str(tmp_path / "c.jsonl"))
    assert (tmp_path / "c.jsonl").read_text() != (tmp_path / "a.jsonl").read_text()


def test_demo_data_is_realistic(demo_url: str) -> None:
    store = persistence.open_store(demo_url)
    usage = store.usage(("provider",)).set_index("provider")
    assert {"kimi", "glm", "openai", "anthropic", "google"} <= set(usage.index.dropna())
    assert int(usage["unpriced_messages"].sum()) > 0  # the self-hosted model has no price
    tools = set(store.facets()["tools"])
    assert {"chat", "codereview", "debug"} <= tools
    assert store.search("缓存 OR 数据库") and store.search('"connection pool"')
    storage = store.storage_usage(())
    assert int(storage["logical_bytes"].iloc[0]) > int(storage["bytes"].iloc[0])  # duplicates were uploaded
    days = store.usage(("day",))
    assert (days["day"].max() - days["day"].min()).days >= 30  # several weeks
    store.close()


def test_export_import_round_trip_is_lossless(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], demo_url: str
) -> None:
    first = tmp_path / "first.jsonl"
    run(capsys, "export", "--url", demo_url, "-o", str(first))
    copy = f"sqlite:///{tmp_path / 'copy.db'}"
    code, out, _ = run(capsys, "import", "--url", copy, str(first))
    assert code == 0 and "Imported 60 threads" in out
    code, out, _ = run(capsys, "import", "--url", copy, str(first))
    assert "Imported 0 threads (60 already present)" in out  # idempotent
    second = tmp_path / "second.jsonl"
    run(capsys, "export", "--url", copy, "-o", str(second))
    assert second.read_text() == first.read_text()
    a, b = persistence.open_store(demo_url), persistence.open_store(copy)
    assert a.usage(("day", "model")).equals(b.usage(("day", "model")))
    a.close()
    b.close()


def test_import_refuses_bad_lines_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"format": "mcp-persistence/1", "conversation": {"id": "x"}}\n')
    code, _, err = run(capsys, "import", "--url", f"sqlite:///{tmp_path / 'x.db'}", str(bad))
    assert code == 2 and "record 1.conversation" in err
    bad.write_text("not json\n")
    code, _, err = run(capsys, "import", "--url", f"sqlite:///{tmp_path / 'x.db'}", str(bad))
    assert code == 2 and "bad.jsonl:1" in err


def test_search_doctor_migrate(capsys: pytest.CaptureFixture[str], demo_url: str) -> None:
    code, out, _ = run(capsys, "search", "--url", demo_url, "connection pool", "--limit", "3")
    assert code == 0 and out.count("\n    ") == 3 and "[" in out
    code, out, _ = run(capsys, "search", "--url", demo_url, "--json", "缓存", "--limit", "2")
    hits = [json.loads(line) for line in out.splitlines()]
    assert len(hits) == 2 and all("缓存" in h["message"]["content"] for h in hits)
    code, _, err = run(capsys, "search", "--url", demo_url, "!!!")
    assert code == 0 and "No matches" in err
    code, out, _ = run(capsys, "doctor", "--url", demo_url, "--json")
    report = json.loads(out)
    assert code == 0 and report["conversations"] == 60 and report["quick_check"] == "ok"
    assert report["unpriced_models"]
    code, out, _ = run(capsys, "migrate", "--url", demo_url)
    assert code == 0 and "0001_initial" in out


def test_reprice_with_a_price_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], demo_url: str) -> None:
    prices = tmp_path / "local.toml"
    prices.write_text(
        "[[model]]\nprovider = 'self'\nmodel = 'llama-3.1-8b-local'\nmatch = '^llama-3\\.1-8b-local$'\n"
        "effective_from = '2020-01-01'\ninput = 0.05\noutput = 0.1\nsource = 'our GPU bill'\n"
    )
    code, out, _ = run(capsys, "reprice", "--url", demo_url, "--prices", str(prices))
    assert code == 0 and "unpriced" in out and "-> 0." in out
    store = persistence.open_store(demo_url)
    assert int(store.usage(())["unpriced_messages"].iloc[0]) == 0
    store.close()
    prices.write_text("[[model]]\nprovider = 'x'\n")
    code, _, err = run(capsys, "reprice", "--url", demo_url, "--prices", str(prices))
    assert code == 2 and "model" in err


def test_module_entry_point_and_bad_url(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "persistence", "--help"], capture_output=True, text=True, check=True)
    for command in ("migrate", "demo", "doctor", "search", "export", "import", "reprice"):
        assert command in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "persistence", "doctor", "--url", "mysql://x"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "unsupported store URL" in bad.stderr
