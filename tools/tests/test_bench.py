"""`python -m citisense_tools.bench`: the shape of its JSON lines (figures are never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from citisense_tools import bench
from citisense_tools.bench_fleet import percentile

BOARDS_REPORT = """\
board       start s  RSS MiB
bench-00       1.52     61.3
bench-01       1.61     60.9

2 boards (firmware), 2 CPUs
start time  mean 1.56 s, max 1.61 s, all booted after 1.70 s
memory      mean 61.1 MiB, max 61.3 MiB, total 122 MiB
CPU         23% of one core for the whole fleet
"""


def _lines(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_wire_line_goes_to_stdout_and_the_results_file(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    out = tmp_path / "bench" / "results.jsonl"
    assert bench.main(["--only", "wire", "--out", str(out)]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == _lines(out)
    [line] = printed
    assert line["bench"] == "wire" and line["reference"]
    machine = line["machine"]
    assert isinstance(machine, dict)
    assert {"cpus", "cpu_model", "python", "load_avg"} <= machine.keys()
    telemetry = line["telemetry"]
    assert isinstance(telemetry, dict) and set(telemetry) == {"lighting", "parking", "air"}
    for sizes in telemetry.values():
        typical = sizes["typical"]
        assert 0 < typical["cbor_bytes"] < typical["json_bytes"]


def test_results_are_appended_run_after_run(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    bench.main(["--only", "wire", "--out", str(out)])
    bench.main(["--only", "wire", "--out", str(out)])
    assert [line["bench"] for line in _lines(out)] == ["wire", "wire"]


def test_a_failing_benchmark_reports_its_error_and_the_run_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(args: object) -> tuple[dict[str, object], str]:
        raise RuntimeError("no broker")

    monkeypatch.setitem(bench.BENCHES, "wire", broken)
    out = tmp_path / "results.jsonl"
    assert bench.main(["--only", "wire", "--out", str(out)]) == 1
    [line] = _lines(out)
    assert line["error"] == "RuntimeError: no broker" and "machine" in line


def test_board_report_is_parsed_into_figures() -> None:
    figures = bench.parse_boards(BOARDS_REPORT)
    assert figures == {
        "boards": 2, "start_s": {"mean": 1.56, "max": 1.61, "all_up": 1.70},
        "rss_mib_per_board": {"mean": 61.1, "max": 61.3, "total": 122.0},
        "fleet_cpu_percent_of_one_core": 23,
    }


def test_a_changed_board_report_is_an_error_not_zeros() -> None:
    with pytest.raises(RuntimeError, match="start_s"):
        bench.parse_boards(BOARDS_REPORT.replace("start time", "boot time"))


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile([7.0], 0.99) == 7.0


@pytest.mark.micropython
def test_footprint_line_per_role(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    bench.main(["--only", "footprint", "--roles", "parking", "--period", "30", "--mpy-period",
                "30", "--speed", "30", "--out", str(out)])
    [line] = _lines(out)
    assert "error" not in line, line
    roles = line["roles"]
    assert isinstance(roles, dict) and set(roles) == {"parking"}
    parking = roles["parking"]
    for code in ("romfs", "mpy_files"):
        assert 0 < parking[code]["heap_booted_bytes"] <= parking[code]["heap_peak_bytes"]
    assert parking["bundle"]["app_mpy_bytes"] > 0 and parking["bundle"]["files"] > 0


@pytest.mark.broker
def test_fleet_lines_with_a_few_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """commands and storm end to end (registry, Mosquitto, gateway, a worker process)."""
    from citisense_tools import bench_fleet

    monkeypatch.setattr(bench_fleet, "SETTLE_S", 0.0)
    monkeypatch.setattr(bench_fleet, "IDLE_WINDOW_S", 0.5)
    out = tmp_path / "results.jsonl"
    assert bench.main(["--only", "commands", "storm", "--nodes", "6", "--samples", "3",
                       "--burst", "6", "--outage", "0.5", "--fleet-timeout", "60",
                       "--out", str(out)]) == 0
    commands, storm = (json.loads(line) for line in out.read_text().splitlines())
    assert commands["bench"] == "commands" and storm["bench"] == "storm"
    assert commands["single"]["acked"] == 3 and commands["burst"]["acked"] == 6
    assert storm["consistent_s"] is not None and storm["lost"] == 0
    assert storm["messages_queued_since_drop"] >= 6  # a new birth from every node at least
    assert "10,000" in commands["reference"] and commands["machine"]["cpus"]
