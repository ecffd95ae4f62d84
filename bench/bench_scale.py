"""The scale benchmark of issue #13: partitioned selection on synthetic sharded embeddings, wall time and peak RSS
per process (the flow and each worker), written to bench/results/scale.md by hand from the JSON this prints.

Each sampler is one `selectflow select` process (the flow), run with `--embeddings <shards folder>` and
`--partitions K`, on the runner asked for (`--runner dask --workers 2`: a local Dask cluster of two worker
processes; `--runner thread --workers 1`: everything in the flow process). Samplers run one after another
on one cache: the first run prepares the corpus, checks the shards and routes them to the partitions; the
others reuse that (their timings say so: corpus, embed and routing near zero).

Peak RSS: every 0.5 s the process tree under the flow is walked (psutil) and each process's VmHWM (its
own peak resident set, kept by the kernel) is read from /proc/<pid>/status; the largest value seen per
process is kept, with its CPU seconds (user + system, the last value seen) and its role from its command line: flow, worker (Dask's spawned worker
processes), prefect-server (the temporary API the CLI starts), other. A process that lives less than 0.5 s
can be missed.

  .venv/bin/python bench/bench_partitions.py --rows 1000000 --shard-rows 500000 --out /tmp/scale/d1m
  nice -n 10 .venv/bin/python bench/bench_scale.py --data /tmp/scale/d1m --runner thread --workers 1 --partitions 1 \
      --work /tmp/scale/w1m --json bench/results/scale-1m.json
  nice -n 10 .venv/bin/python bench/bench_scale.py --data /tmp/scale/d10m --runner dask --workers 2 \
      --work /tmp/scale/w10m --json bench/results/scale-10m.json
  .venv/bin/python bench/bench_scale.py --render bench/results/scale-1m.json bench/results/scale-10m.json
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent


def _vm_hwm_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _role(proc: psutil.Process, root: int) -> str:
    if proc.pid == root:
        return "flow"
    try:
        cmd = " ".join(proc.cmdline())
    except (psutil.Error, OSError):
        return "other"
    if "uvicorn" in cmd or "prefect" in cmd and "server" in cmd:
        return "prefect-server"
    if "multiprocessing" in cmd or "spawn_main" in cmd or "forkserver" in cmd:
        return "worker" if "resource_tracker" not in cmd else "other"
    return "other"


class TreePeaks:
    """The peak RSS (VmHWM) of every process under `root`, sampled every `interval` seconds in a thread."""

    def __init__(self, root: int, interval: float = 0.5):
        self.root, self.interval = root, interval
        self.peaks: dict[int, dict] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _loop(self):
        while not self._stop.is_set():
            try:
                top = psutil.Process(self.root)
                procs = [top] + top.children(recursive=True)
            except psutil.Error:
                procs = []
            for p in procs:
                hwm = _vm_hwm_bytes(p.pid)
                entry = self.peaks.setdefault(p.pid, {"pid": p.pid, "role": _role(p, self.root), "peak_rss_gib": 0.0,
                                                      "cpu_s": 0.0})
                entry["peak_rss_gib"] = max(entry["peak_rss_gib"], round(hwm / 2**30, 3))
                try:
                    t = p.cpu_times()
                    entry["cpu_s"] = max(entry["cpu_s"], round(t.user + t.system, 1))  # cumulative: the last seen
                except psutil.Error:
                    pass
            self._stop.wait(self.interval)


def run_sampler(*, data: Path, sampler: str, budget: str, runner: str, workers: int, partitions: int | None,
                work: Path, extra: list[str]) -> dict:
    manifest = json.loads((data / "manifest.json").read_text())
    out = work / f"out-{sampler}"
    cmd = [str(REPO / ".venv" / "bin" / "selectflow"), "select", str(data / manifest["corpus"]), "--id", "id",
           "--embeddings", str(data / "embeddings"), "--sampler", sampler, "--budget", budget, "--runner", runner,
           "--workers", str(workers), "--out", str(out), "--cache-dir", str(work / "cache"), "--overwrite", *extra]
    if partitions:
        cmd += ["--partitions", str(partitions)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PREFECT_HOME": str(work / "prefect"), "TOKENIZERS_PARALLELISM": "false"}
    log = work / f"{sampler}.log"
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        with TreePeaks(proc.pid) as peaks:
            code = proc.wait()
    wall = time.perf_counter() - t0
    result = {"sampler": sampler, "rows": manifest["rows"], "budget": budget, "runner": runner, "workers": workers,
              "partitions": partitions, "exit_code": code, "wall_s": round(wall, 1), "log": str(log),
              "processes": sorted(peaks.peaks.values(), key=lambda e: (e["role"], e["pid"]))}
    if code == 0:
        m = json.loads((out / "manifest.json").read_text())
        result["timings_s"] = m["timings_seconds"]
        result["selected"] = m["rows"]["selected"]
        report = json.loads((out / "report.json").read_text())
        part = report["diagnostics"].get("partitioned", {})
        result["partition"] = {k: part.get(k) for k in ("k", "sizes", "quotas", "partition_seconds")}
        result["merge"] = {k: v for k, v in part.get("merge", {}).items() if k != "per_partition"}
    return result


def render(paths: list[str]) -> str:
    """The markdown table of bench/results/scale.md from the JSON lines this script appends."""
    lines = ["| rows | runner | K | sampler | wall s | corpus s | embed s | select s (sampler s per partition) | report s "
             "| flow peak GiB | worker peak GiB (each) | CPU s: flow + workers | border dups replaced |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for path in paths:
        for raw in Path(path).read_text().splitlines():
            r = json.loads(raw)
            if r["exit_code"] != 0:
                lines.append(f"| {r['rows']:,} | {r['runner']} ×{r['workers']} | {r['partitions']} | {r['sampler']} | failed "
                             f"(exit {r['exit_code']}) |" + " |" * 8)
                continue
            t = r["timings_s"]
            procs = r["processes"]
            flow = [p for p in procs if p["role"] == "flow"]
            workers = [p for p in procs if p["role"] == "worker"]
            cpu = [p.get("cpu_s") for p in flow + workers]
            cpu_text = "n/m" if any(c is None for c in cpu) else f"{flow[0]['cpu_s']:.0f} + {sum(p['cpu_s'] for p in workers):.0f}"
            sampler = f"{r['sampler']} ({r['note']})" if r.get("note") else r["sampler"]
            lines.append(
                f"| {r['rows']:,} | {r['runner']} ×{r['workers']} | {r['partitions']} | {sampler} | {r['wall_s']:.0f} "
                f"| {t.get('corpus', 0):.0f} | {t.get('embed', 0):.0f} | {t.get('select', 0):.0f} "
                f"({', '.join(f'{s:.0f}' for s in r['partition']['partition_seconds'])}) | {t.get('report', 0):.0f} "
                f"| {flow[0]['peak_rss_gib']:.2f} | {', '.join('%.2f' % p['peak_rss_gib'] for p in workers) or '–'} "
                f"| {cpu_text} | {r['merge'].get('replaced', 0)} of {r['merge'].get('border_duplicates', 0)} |")
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["--render"]:
        print(render(sys.argv[2:]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="a folder written by bench/bench_partitions.py")
    ap.add_argument("--work", required=True, help="cache, outputs and logs of the runs (deleted by nothing: delete it after)")
    ap.add_argument("--samplers", default="kmeans,mig,dpp")
    ap.add_argument("--budget", default="0.01")
    ap.add_argument("--runner", default="dask", choices=["thread", "dask", "ray"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--partitions", type=int, default=None,
                    help="K; default: planning/partitions.py default_partitions (about 1M rows per partition)")
    ap.add_argument("--json", default=None, help="append the results here (one JSON object per line)")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO.parent))
    from selectflow.tasks.planning.partitions import default_partitions

    data = Path(args.data)
    rows = json.loads((data / "manifest.json").read_text())["rows"]
    k = args.partitions or default_partitions(rows)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    for sampler in args.samplers.split(","):
        result = run_sampler(data=data, sampler=sampler, budget=args.budget, runner=args.runner, workers=args.workers,
                             partitions=k, work=work, extra=[])
        line = json.dumps(result)
        print(line, flush=True)
        if args.json:
            with open(args.json, "a") as fh:
                fh.write(line + "\n")


if __name__ == "__main__":
    main()
