"""The importable benchmark helpers (tiny sizes; timings themselves are not asserted)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from kexue.attention.bench import default_methods, markdown_table, run_benchmark


def test_run_benchmark_and_table():
    rows = run_benchmark([64, 128], default_methods(window=8, rate=16, keys=8), h=2, e=8,
                         repeats=1, memory=False)  # fmt: skip
    assert len(rows) == 16 and not any(r["error"] for r in rows)  # 8 methods x 2 sizes
    assert all(r["fwd_s"] > 0 and r["fwd_bwd_s"] > 0 for r in rows)
    table = markdown_table(rows)
    assert (
        table.count("\n") == 17 and "| local(8) | 128 |" in table and "| fixed(16) | 64 |" in table
    )


def test_peak_memory_grows_for_dense_mask():
    """Resident-set peak (own process: it changes malloc settings): a dense-mask SDPA needs
    the n x n mask as floats; the blocked local kernel does not."""
    script = textwrap.dedent(
        """
        from kexue.attention.bench import default_methods, peak_extra_mib
        m = {x.name: x for x in default_methods(window=16)}
        n = 2048
        dense = peak_extra_mib(m["SDPA + dense local(16) mask"].build(n), n, h=4, e=16)
        local = peak_extra_mib(m["local(16)"].build(n), n, h=4, e=16)
        print(dense, local)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()  # fmt: skip
    if out[0] == "None":
        return  # no /proc or glibc here
    dense, local = map(float, out)
    assert local < dense
