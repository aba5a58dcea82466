"""Fourth device call (H200, the last 270 s of device time): L1, bf16, batch 256, throughput only.

In one process, in this order (so that a cut-off call still returns the comparison that matters most):
1. ours with the two new options (attention="matmul", gelu_epilogue=True, now the CUDA defaults) on top of the
   run-3 configuration (fused + Triton Meta4D kernel + compile + CUDA graphs);
2. timm's best mode (compile + channels-last + CUDA graphs);
3. ours in the run-3 configuration (attention="sdpa", gelu_epilogue=False), for the A/B of the new options.

When it ran (results in benchmarks/results/h200_run4*), modes 1 and 3 were named
"fused+triton+epilogue+compile+graphs" and "fused+triton+compile+graphs"; the names below are today's.
The L3/L7 rows of h200_run5.json came from a second call with mode 1 and timm's mode for "l3" then "l7"
(cut off by the end of the device time before timm's L7 row).

    PYTHONPATH=src python benchmarks/gpu_run4.py     # rows and environment go to $OUT/results4.json
"""
from __future__ import annotations

import json
import os
import time

from efficientformer.bench import environment, format_table, rows_as_dicts, run_benchmark


def main() -> int:
    out_dir = os.environ.get("OUT", ".")
    started = time.perf_counter()
    results: dict = {"environment": environment(), "rows": []}

    def log(line: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {line}", flush=True)

    def save() -> None:
        with open(os.path.join(out_dir, "results4.json"), "w") as handle:
            json.dump(results, handle, indent=1, default=str)

    common = dict(device="cuda", batch_size=256, dtype="bf16", latency=False, min_time=1.0, log=log)
    rows = run_benchmark("l1", modes=["fused+triton+compile+graphs"], timm_modes=["compile+cl+graphs"],
                         **common)
    results["rows"] += rows_as_dicts(rows)
    save()
    rows += run_benchmark("l1", modes=["fused+triton+sdpa+compile+graphs"], compare=None, **common)
    results["rows"] = rows_as_dicts(rows)
    save()
    print(format_table(rows, title="L1 224 bf16 batch 256 (run 4)"))
    print(f"total {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
