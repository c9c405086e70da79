"""The GPU bench of `make gpu-check` runs end to end (on CPU, a tiny model) and prints its table."""

from __future__ import annotations

from bench import engine_bench


def test_engine_bench_quick_prints_one_row_per_concurrency(capsys):
    assert engine_bench.main(["--quick", "--device", "cpu", "--dtype", "float32", "--clients", "1,3",
                              "--prompt-len", "16", "--new-tokens", "8"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip()[:1].isdigit()]
    assert [r[0] for r in rows] == ["1", "3"]
    assert all(float(r[1]) > 0 and float(r[2]) > 0 for r in rows)
