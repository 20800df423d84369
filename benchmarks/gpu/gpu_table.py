"""Joins benchmarks/gpu/run.sh's results (flowbench JSON per architecture, `flowtrain bench`
JSON per architecture, PyTorch JSON lines) into one markdown table with the flowrt/PyTorch ratio
(PyTorch eager runs fp32; rows such as "cifar-tf32" are flowrt at TF32 against that). Training
rows carry the device memory of both sides."""
import glob
import json
import os
import sys


def main(out):
    rows = {}
    for path in sorted(glob.glob(os.path.join(out, "flowbench-*.json"))):
        arch = os.path.basename(path)[len("flowbench-"):-len(".json")]
        with open(path) as f:
            doc = json.load(f)
        for r in doc["results"]:
            rows.setdefault((arch, r["op"], r["batch"]), {})["flowrt"] = r
    for path in sorted(glob.glob(os.path.join(out, "train-*.json"))):
        with open(path) as f:
            doc = json.load(f)
        arch = doc["model"]
        for c in doc["cases"]:
            c = dict(c, gflops=c["images_per_s"] * doc["gflop_per_image"])
            rows.setdefault((arch, "train", c["batch"]), {})["flowrt"] = c
    for path in sorted(glob.glob(os.path.join(out, "torch-*.jsonl"))):
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                rows.setdefault((r["model"], r["op"], r["batch"]), {})["torch"] = r
    print("| model | op | batch | flowrt ms | flowrt img/s | flowrt TFLOP/s | PyTorch ms | "
          "speed-up | device MiB flowrt / PyTorch |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for key in sorted(rows, key=lambda k: (k[0], k[1], k[2])):
        fr, tr = rows[key].get("flowrt"), rows[key].get("torch")
        if "-" in key[0]:  # "cifar-tf32": flowrt at another precision, against PyTorch's fp32
            tr = rows.get((key[0].split("-")[0], key[1], key[2]), {}).get("torch")
        cells = [key[0], key[1], str(key[2])]
        cells += (["%.3f" % fr["median_ms"], "%.1f" % fr["images_per_s"],
                   "%.2f" % (fr["gflops"] / 1e3)] if fr else ["-"] * 3)
        cells += ["%.3f" % tr["median_ms"] if tr else "-"]
        cells += ["%.2fx" % (tr["median_ms"] / fr["median_ms"]) if fr and tr else "-"]
        cells += ["%.0f / %.0f" % (fr.get("device_mib", 0), tr.get("device_mib", 0))
                  if key[1] == "train" and fr and tr else "-"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "gpu-results")
