"""Joins flowbench's JSON files and bench_torch.py's JSON lines from one run.sh directory into a
markdown table with the speed-ups, followed by the machine and the exact commands."""

import glob
import json
import os
import sys


def main(out):
    flowrt, machine = {}, None
    for path in sorted(glob.glob(os.path.join(out, "flowbench-*.json"))):
        arch = os.path.basename(path).split("-")[1]
        with open(path) as f:
            doc = json.load(f)
        machine = doc
        for r in doc["results"]:
            flowrt[(arch, r["op"], r["batch"])] = r
    torch, torch_version = {}, ""
    for path in sorted(glob.glob(os.path.join(out, "torch-*.jsonl"))):
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                torch[(r["model"], r["op"], r["batch"])] = r
                torch_version = r["torch"]
    if machine is None:
        sys.exit("join_results: no flowbench results in " + out)
    peak = machine.get("peak_gflops")
    # The fp32 peak (these rows are fp32): the FMA rate, or a cache's library peaks without it.
    peak_best = max(v for k, v in peak.items() if k != "bf16_matmul") if peak else None
    print("| model | op | batch | PyTorch ms | flowrt ms | PyTorch img/s | flowrt img/s | "
          "speed-up | PyTorch GFLOP/s | flowrt GFLOP/s | flowrt % of peak |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key in sorted(flowrt, key=lambda k: (k[0] != "fmnist", k[1], k[2])):
        fr, tr = flowrt[key], torch.get(key)
        pct = "%.0f%%" % (100 * fr["gflops"] / peak_best) if peak_best else "-"
        if tr:
            print("| %s | %s | %d | %.2f | %.2f | %.1f | %.1f | %.2fx | %.0f | %.0f | %s |" % (
                key[0], key[1], key[2], tr["median_ms"], fr["median_ms"], tr["images_per_s"],
                fr["images_per_s"], tr["median_ms"] / fr["median_ms"], tr["gflops"],
                fr["gflops"], pct))
        else:
            print("| %s | %s | %d | - | %.2f | - | %.1f | - | - | %.0f | %s |" % (
                key[0], key[1], key[2], fr["median_ms"], fr["images_per_s"], fr["gflops"], pct))
    print()
    print("Median of the timed repetitions; a fresh process per batch size for both. "
          "Machine: %s, %d cores (%s); flowrt commit %s, %s, oneDNN %s; PyTorch %s; %s." % (
              machine["cpu"], machine["cores"], machine["isa"], machine["commit"],
              machine["compiler"], machine["onednn"], torch_version, machine["date"]))
    if peak:
        print("Measured fp32 peak: matmul %.0f GFLOP/s, conv3x3 %.0f GFLOP/s." % (
            peak["matmul"], peak["conv3x3"]))
    print()
    print("Commands:")
    print("```")
    with open(os.path.join(out, "commands.txt")) as f:
        print(f.read().rstrip())
    print("```")


if __name__ == "__main__":
    main(sys.argv[1])
