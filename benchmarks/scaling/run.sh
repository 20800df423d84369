#!/usr/bin/env bash
# Data-parallel scaling on this machine, side by side in one run:
#   - flowtrain training images/s on the fmnist architecture (1x32x32, 3 levels x 8 steps, width
#     256) on Fashion-MNIST at global batch 64, a fixed number of steps, for
#       p1t2      1 process x 2 threads                      (the baseline)
#       r2ordered 2 ranks x 1 thread, --dist mpi --dist-reduce ordered (the default)
#       r2fast    2 ranks x 1 thread, --dist mpi --dist-reduce fast
#       p1t2s2    1 process x 2 threads, --grad-shards 2     (the ordered run's one-process twin)
#       p1t1b32   1 process x 1 thread at batch 32           (one rank's share, alone: the
#                                                             compute a rank does per step)
#     in ROUNDS rounds, the case order rotated each round, every case started once the CPUs are
#     idle; images/s over the steps after the first SKIP (from metrics.csv: rank 0's step times);
#   - bench_reduce (Communicator::reduce_shards alone) for the fmnist and cifar gradient sizes at
#     2 ranks x 1 thread, ordered and fast;
#   - model.py on the results (CPU check of the step-time model, GPU extrapolation).
# Writes OUT_DIR/results.json (everything), OUT_DIR/summary.md (the tables), the model's
# OUT_DIR/model.md and OUT_DIR/efficiency.svg/.png, and each run's directory and log.
#
# Usage: benchmarks/scaling/run.sh OUT_DIR [BUILD_DIR]    (BUILD_DIR default: build)
# Environment: ROUNDS (3), STEPS (60), SKIP (20), LOG_EVERY (10), BATCH (64), REDUCE_REPS (20),
#   CASES (all five), DATA_DIR (/usr/share/datasets/fashion-mnist), IDLE_PCT (90), WAIT_S (90),
#   FOREIGN_PCT (5), RETRIES (2),
#   COMMIT (recorded; default: git rev-parse --short HEAD of this checkout).
# A full run takes 10-15 minutes on the 2-core machine of benchmarks/RESULTS.md (each rerun of
# a disturbed case adds about 30 s).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
if [ $# -lt 1 ]; then
  echo "usage: $0 OUT_DIR [BUILD_DIR]" >&2
  exit 2
fi
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
BUILD=$(cd "${2:-$ROOT/build}" && pwd)
ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-60}
SKIP=${SKIP:-20}
LOG_EVERY=${LOG_EVERY:-10}
BATCH=${BATCH:-64}
REDUCE_REPS=${REDUCE_REPS:-20}
CASES=${CASES:-"p1t2 r2ordered r2fast p1t2s2 p1t1b32"}
DATA_DIR=${DATA_DIR:-/usr/share/datasets/fashion-mnist}
IDLE_PCT=${IDLE_PCT:-90}
WAIT_S=${WAIT_S:-90}
FOREIGN_PCT=${FOREIGN_PCT:-5}
RETRIES=${RETRIES:-2}
FT=$BUILD/bin/flowtrain
BR=$BUILD/bin/bench_reduce
for exe in "$FT" "$BR"; do
  if [ ! -x "$exe" ]; then
    echo "run.sh: $exe not found (build with MPI: cmake --build $BUILD --target flowtrain bench_reduce)" >&2
    exit 2
  fi
done
if [ ! -f "$DATA_DIR/train-images-idx3-ubyte.gz" ] && [ ! -f "$DATA_DIR/train-images-idx3-ubyte" ]; then
  echo "run.sh: no Fashion-MNIST in $DATA_DIR (Debian: apt-get install dataset-fashion-mnist)" >&2
  exit 2
fi
# python3 with numpy for model.py (Debian's interpreter has it where a pyenv one may not).
PY=
for p in python3 /usr/bin/python3; do
  if command -v "$p" > /dev/null && "$p" -c 'import numpy' 2> /dev/null; then PY=$p; break; fi
done
if [ -z "$PY" ]; then
  echo "run.sh: needs python3 with numpy (Debian: python3-numpy)" >&2
  exit 2
fi
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
MPIRUN=(mpirun -np 2 --bind-to none --mca btl "self,vader" -x OMP_NUM_THREADS=1)
if [ "$(nproc)" -lt 2 ]; then MPIRUN+=(--oversubscribe); fi

# Timings on this small shared machine are only meaningful on idle CPUs: each case first waits
# (at most WAIT_S seconds) until the CPUs are IDLE_PCT % idle over 2 s, and records what it saw;
# then runs under `measured` (below), which also records how much CPU time other processes took
# while it ran (the machine's busy time from /proc/stat, steal included, less this case's own
# CPU time); a case where that exceeds FOREIGN_PCT % of the machine is run again (RETRIES).
cpu_idle_pct() {
  local a b total=0 i
  read -r -a a < <(head -1 /proc/stat); sleep 2; read -r -a b < <(head -1 /proc/stat)
  for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
  echo $(((100 * (b[4] - a[4] + b[5] - a[5])) / (total > 0 ? total : 1)))
}
LAST_IDLE=0
# measured LOG CMD...: runs CMD with its output in LOG; prints "rc wall_s foreign_pct".
measured() {
  "$PY" - "$@" <<'PYEOF'
import os, resource, subprocess, sys, time
def busy():
    v = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
    return sum(v) - v[3] - v[4]  # all but idle and iowait; steal counts as taken
hz, ncpu = os.sysconf("SC_CLK_TCK"), os.cpu_count()
b0, w0 = busy(), time.time()
with open(sys.argv[1], "w") as log:
    rc = subprocess.call(sys.argv[2:], stdout=log, stderr=subprocess.STDOUT)
wall, taken = time.time() - w0, (busy() - b0) / hz
ru = resource.getrusage(resource.RUSAGE_CHILDREN)  # the case's processes, ranks included
foreign = max(0.0, taken - ru.ru_utime - ru.ru_stime)
print("%d %.2f %.1f" % (rc, wall, 100 * foreign / (wall * ncpu)))
PYEOF
}
wait_quiet() {
  local waited=0
  while LAST_IDLE=$(cpu_idle_pct); [ "$LAST_IDLE" -lt "$IDLE_PCT" ]; do
    if [ "$waited" -ge "$WAIT_S" ]; then
      echo "run.sh: warning: CPUs only ${LAST_IDLE}% idle; this case's timing is distorted" >&2
      return
    fi
    sleep 3; waited=$((waited + 5))
  done
}

TRAIN=(train --data fashion-mnist --data-dir "$DATA_DIR" --levels 3 --depth 8 --width 256
  --steps "$STEPS" --log-every "$LOG_EVERY" --eval-every 0 --limit-test 64 --eval-images 64
  --seed 0)
case_cmd() {  # the command line of case $1 writing run directory $2
  case $1 in
    p1t2) echo "$FT" "${TRAIN[@]}" --batch "$BATCH" --threads 2 --out "$2" ;;
    p1t2s2) echo "$FT" "${TRAIN[@]}" --batch "$BATCH" --threads 2 --grad-shards 2 --out "$2" ;;
    p1t1b32) echo "$FT" "${TRAIN[@]}" --batch $((BATCH / 2)) --threads 1 --out "$2" ;;
    r2ordered | r2fast)
      echo "$FT" launch -n 2 --threads 1 -- "${TRAIN[@]}" --batch "$BATCH" --threads 1 \
        --dist mpi --dist-reduce "${1#r2}" --out "$2" ;;
    *) echo "run.sh: unknown case $1" >&2; exit 2 ;;
  esac
}

mkdir -p "$OUT/runs"
: > "$OUT/train_runs.tsv"
: > "$OUT/reduce_runs.tsv"
read -r -a cases <<< "$CASES"
ncases=${#cases[@]}
t_start=$(date +%s)
echo "run.sh: $ROUNDS rounds of ${cases[*]}, $STEPS steps each (first $SKIP skipped), batch $BATCH"
for ((r = 0; r < ROUNDS; ++r)); do
  for ((i = 0; i < ncases; ++i)); do
    c=${cases[$(((i + r) % ncases))]}
    dir=$OUT/runs/$c-r$r
    cmd=$(case_cmd "$c" "$dir")
    for ((attempt = 0; attempt <= RETRIES; ++attempt)); do
      rm -rf "$dir"
      wait_quiet
      # shellcheck disable=SC2086 # the command line is words without spaces
      read -r rc wall foreign < <(measured "$OUT/runs/$c-r$r.log" $cmd)
      if [ "$rc" != 0 ]; then
        echo "run.sh: case $c (round $r) failed; its log:" >&2
        tail -20 "$OUT/runs/$c-r$r.log" >&2
        exit 1
      fi
      echo "  round $r: $c: $(tail -1 "$dir/metrics.csv" | cut -d, -f6) img/s in the last interval (CPUs ${LAST_IDLE}% idle before, other processes took ${foreign}% while it ran)"
      if awk "BEGIN {exit !($foreign <= $FOREIGN_PCT)}"; then break; fi
      if [ "$attempt" -lt "$RETRIES" ]; then echo "  round $r: $c disturbed: again"; fi
    done
    attempt=$((attempt > RETRIES ? RETRIES : attempt))
    printf '%s\t%d\t%s\t%s\t%s\t%d\t%s\n' "$c" "$r" "$LAST_IDLE" "$wall" "$foreign" "$attempt" \
      "$cmd" >> "$OUT/train_runs.tsv"
  done
done

echo "run.sh: bench_reduce, 2 ranks x 1 thread"
for arch in fmnist cifar; do
  reps=$REDUCE_REPS
  [ "$arch" = cifar ] && reps=$(((REDUCE_REPS + 1) / 2))
  for ((attempt = 0; attempt <= RETRIES; ++attempt)); do
    wait_quiet
    read -r rc wall foreign < <(measured "$OUT/reduce-$arch.txt" "${MPIRUN[@]}" "$BR" --arch "$arch" \
      --mode ordered,fast --reps "$reps" --warmup 3 --threads 1 --json "$OUT/reduce-$arch.json")
    cat "$OUT/reduce-$arch.txt"
    if [ "$rc" != 0 ]; then echo "run.sh: bench_reduce failed" >&2; exit 1; fi
    echo "  (other processes took ${foreign}% of the machine while it ran)"
    if awk "BEGIN {exit !($foreign <= $FOREIGN_PCT)}"; then break; fi
  done
  attempt=$((attempt > RETRIES ? RETRIES : attempt))
  printf '%s\t%s\t%s\t%s\n' "$arch" "$LAST_IDLE" "$foreign" "$attempt" >> "$OUT/reduce_runs.tsv"
done
t_end=$(date +%s)

# Everything into results.json and the tables into summary.md (python3's standard library).
FOREIGN_PCT=$FOREIGN_PCT "$PY" - "$OUT" "$BATCH" "$SKIP" "$STEPS" "$ROUNDS" "$ROOT" "$BUILD" "$t_start" "$t_end" <<'PYEOF'
import csv, json, os, platform, statistics, subprocess, sys
out, batch, skip, steps, rounds, root, build, t_start, t_end = sys.argv[1:]
batch, skip, steps, rounds = int(batch), int(skip), int(steps), int(rounds)

def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""

cpu = next((l.split(":", 1)[1].strip() for l in sh("lscpu").splitlines()
            if l.startswith("Model name")), platform.processor())
runs = []
with open(os.path.join(out, "train_runs.tsv")) as f:
    for case, rnd, idle, wall, foreign, attempt, cmd in csv.reader(f, delimiter="\t"):
        rows = list(csv.DictReader(open(os.path.join(out, "runs", "%s-r%s" % (case, rnd),
                                                     "metrics.csv"))))
        b = batch // 2 if case == "p1t1b32" else batch
        prev, images, seconds, bpd = 0, 0, 0.0, []
        for row in rows:
            step, ips = int(row["step"]), float(row["images_per_s"])
            n = step - prev
            if prev >= skip and ips > 0:
                images += b * n
                seconds += b * n / ips
            bpd.append(row["train_bpd"])
            prev = step
        runs.append({"case": case, "round": int(rnd), "batch": b, "cpu_idle_pct_before": int(idle),
                     "foreign_cpu_pct": float(foreign), "retries": int(attempt),
                     "disturbed": float(foreign) > float(os.environ["FOREIGN_PCT"]),
                     "wall_s": round(float(wall), 2), "command": cmd,
                     "timed_steps": images // b, "images_per_s": images / seconds,
                     "step_ms": 1e3 * seconds / (images // b),
                     "metrics": [{k: row[k] for k in ("step", "train_bpd", "images_per_s")}
                                 for row in rows], "train_bpd": bpd})

cases = []
for r in runs:
    if r["case"] not in cases:
        cases.append(r["case"])
summary = {}
for c in cases:
    v = [r["images_per_s"] for r in runs if r["case"] == c]
    ms = [r["step_ms"] for r in runs if r["case"] == c]
    summary[c] = {"images_per_s_median": statistics.median(v), "images_per_s_min": min(v),
                  "images_per_s_max": max(v), "step_ms_median": statistics.median(ms),
                  "rounds": len(v)}

def by_round(c):
    return {r["round"]: r for r in runs if r["case"] == c}

ratios = {}
for c in cases:
    if c in ("p1t2", "p1t1b32"):
        continue
    a, b = by_round(c), by_round("p1t2")
    per = [a[k]["images_per_s"] / b[k]["images_per_s"] for k in sorted(a) if k in b]
    if per:
        ratios["%s/p1t2" % c] = {"per_round": per, "median": statistics.median(per)}
# The ordered ranks must compute exactly what their one-process twin computes.
twin = None
if "r2ordered" in cases and "p1t2s2" in cases:
    a, b = by_round("r2ordered"), by_round("p1t2s2")
    twin = all(a[k]["train_bpd"] == b[k]["train_bpd"] for k in a if k in b)

reduce = {}
for arch in ("fmnist", "cifar"):
    p = os.path.join(out, "reduce-%s.json" % arch)
    if os.path.exists(p):
        reduce[arch] = json.load(open(p))
with open(os.path.join(out, "reduce_runs.tsv")) as f:
    for arch, idle, foreign, attempt in csv.reader(f, delimiter="\t"):
        if arch in reduce:
            reduce[arch].update({"cpu_idle_pct_before": int(idle),
                                 "foreign_cpu_pct": float(foreign), "retries": int(attempt)})
share = {}
for mode in ("ordered", "fast"):
    c = "r2" + mode
    if c in summary and "fmnist" in reduce:
        t = next(x["median_ms"] for x in reduce["fmnist"]["results"] if x["mode"] == mode)
        share[mode] = {"reduce_ms": t, "step_ms": summary[c]["step_ms_median"],
                       "share": t / summary[c]["step_ms_median"]}

doc = {
    "machine": {"cpu": cpu, "cpus": os.cpu_count(), "kernel": platform.release(),
                "mpirun": sh("mpirun", "--version").splitlines()[0] if sh("mpirun", "--version") else ""},
    "date_utc_start": sh("date", "-u", "-d", "@" + t_start, "+%Y-%m-%d %H:%M"),
    "date_utc_end": sh("date", "-u", "-d", "@" + t_end, "+%Y-%m-%d %H:%M"),
    "commit": os.environ.get("COMMIT") or sh("git", "-C", root, "rev-parse", "--short", "HEAD"),
    "source_dirty": bool(sh("git", "-C", root, "status", "--porcelain", "--untracked-files=no")),
    "build": build,
    "config": {"arch": "fmnist (1x32x32, 3 levels x 8 steps, width 256)", "data": "fashion-mnist",
               "global_batch": batch, "steps": steps, "skipped_steps": skip, "rounds": rounds},
    "train_runs": runs, "train_summary": summary, "ratios_vs_p1t2": ratios,
    "ordered_matches_grad_shards_twin": twin, "reduce": reduce, "reduce_share_of_step": share,
}
json.dump(doc, open(os.path.join(out, "results.json"), "w"), indent=1)

names = {"p1t2": "1 process x 2 threads", "r2ordered": "2 ranks x 1 thread, ordered",
         "r2fast": "2 ranks x 1 thread, fast", "p1t2s2": "1 process x 2 threads, --grad-shards 2",
         "p1t1b32": "1 process x 1 thread, batch %d (one rank's share)" % (batch // 2)}
lines = ["CPU: %s (%d CPUs), %s to %s UTC, commit %s%s" % (
             cpu, os.cpu_count(), doc["date_utc_start"], doc["date_utc_end"], doc["commit"],
             " (with uncommitted changes)" if doc["source_dirty"] else ""), "",
         "| case | images/s (median of %d) | min–max | step ms | vs 1 process x 2 threads |" % rounds,
         "|---|---:|---:|---:|---:|"]
for c in cases:
    s = summary[c]
    rk = "%s/p1t2" % c
    lines.append("| %s | %.1f | %.1f–%.1f | %.1f | %s |" % (
        names.get(c, c), s["images_per_s_median"], s["images_per_s_min"], s["images_per_s_max"],
        s["step_ms_median"],
        ("%.3f (rounds: %s)" % (ratios[rk]["median"], ", ".join("%.3f" % x for x in ratios[rk]["per_round"])))
        if rk in ratios else "1" if c == "p1t2" else "—"))
idle = sorted(r["cpu_idle_pct_before"] for r in runs)
foreign = sorted(r["foreign_cpu_pct"] for r in runs)
lines += ["", "CPUs idle before each case: min %d %%, median %d %%; CPU time other processes "
          "took while a case ran: median %.1f %%, max %.1f %% of the machine; %d case(s) rerun "
          "for exceeding %s %%, %d still above it" % (
              idle[0], idle[len(idle) // 2], foreign[len(foreign) // 2], foreign[-1],
              sum(1 for r in runs if r["retries"]), os.environ["FOREIGN_PCT"],
              sum(1 for r in runs if r["disturbed"]))]
if twin is not None:
    lines += ["", "2 ranks ordered vs --grad-shards 2 twin: train bits/dim %s" % (
        "bit-identical in every round" if twin else "DIFFER")]
lines += ["", "| gradient | floats | mode | median ms | min ms | busbw GB/s | share of a 2-rank step |",
          "|---|---:|---|---:|---:|---:|---:|"]
for arch, d in reduce.items():
    for x in d["results"]:
        sh_ = ("%.1f %%" % (100 * share[x["mode"]]["share"])) if arch == "fmnist" and x["mode"] in share else "—"
        lines.append("| %s | %d | %s | %.2f | %.2f | %.2f | %s |" % (
            arch, d["floats"], x["mode"], x["median_ms"], x["min_ms"], x["busbw_gbps"], sh_))
open(os.path.join(out, "summary.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PYEOF

"$PY" "$HERE/model.py" --measured "$OUT/results.json" --out "$OUT"
echo "run.sh: results in $OUT (results.json, summary.md, model.md, efficiency.svg); took $(((t_end - t_start) / 60)) min"
