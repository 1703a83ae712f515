"""The benchmark entry point runs, prints its table, and writes JSON naming the machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def bench(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "EDGEFACE_RESULTS_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "benchmarks", *args], capture_output=True, text=True,
                            timeout=600, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr
    return result


def test_size_and_latency_tables(tmp_path):
    pytest.importorskip("torch")
    out = bench(tmp_path, "size", "--models", "extd64", "extd32-ssd").stdout
    assert "| extd64 | 162,352 | 10.06 | 13.41 |" in out
    size = json.loads((tmp_path / "model_size.json").read_text())
    assert size["machine"]["cores"] and [r["model"] for r in size["rows"]] == ["extd64", "extd32-ssd"]
    bench(tmp_path, "latency", "--models", "extd32-relu", "--backends", "onnxruntime", "--runs", "2",
          "--warmup", "0")
    latency = json.loads((tmp_path / "latency_cpu.json").read_text())
    row = latency["rows"][0]
    assert row["backend"].startswith("onnxruntime") and row["network_ms"] > 0 and row["total_ms"] >= row["network_ms"]
    assert "Machine:" in (tmp_path / "latency_cpu.md").read_text()


def test_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and "size,latency,speed,accuracy,gpu,gpu-suite,all" in result.stdout


def test_speed_grid_cell_runs_in_its_own_process(tmp_path):
    pytest.importorskip("torch")
    bench(tmp_path, "speed", "--models", "extd32-relu", "--backends", "onnxruntime-1t", "--sizes", "160x120",
          "--batches", "1", "2", "--runs", "2", "--warmup", "0")
    rows = json.loads((tmp_path / "speed_grid_cpu.json").read_text())["rows"]
    assert [(r["size"], r["batch"]) for r in rows] == [("160x120", 1), ("160x120", 2)]
    assert all(r["total_p99_ms"] >= r["total_ms"] > 0 and 20 < r["peak_rss_mb"] < 4000 for r in rows)


def test_gpu_benchmark_says_what_it_skipped(tmp_path):
    result = subprocess.run([sys.executable, "-m", "benchmarks", "gpu", "--runs", "2"], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "EDGEFACE_RESULTS_DIR": str(tmp_path)}, timeout=600)
    assert result.returncode == 0, result.stderr
    if "skipped: no CUDA GPU" not in result.stdout:  # a GPU machine: the table was written
        assert (tmp_path / "gpu.json").exists()
