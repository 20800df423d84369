# Sourced by run.sh and train.sh: the interpreter, PyTorch's CPU tuning, and wait_quiet.
PY=/usr/bin/python3  # Debian's torch lives in the system interpreter
# PyTorch's CPU tuning: one BLAS thread per intra-op thread, no malloc trimming/mmap churn
# (flowtrain and flowbench set their own threading).
export OPENBLAS_NUM_THREADS=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=4294967296
# Other processes on a small machine distort timings badly (OpenMP threads spin at barriers
# waiting for a descheduled peer), so each measurement first waits until the CPUs are at least
# IDLE_PCT percent idle over a 2 s window (for at most WAIT_S seconds).
IDLE_PCT=${IDLE_PCT:-90}
WAIT_S=${WAIT_S:-600}
cpu_idle_pct() {
  local a b
  read -r -a a < <(head -1 /proc/stat); sleep 2; read -r -a b < <(head -1 /proc/stat)
  local total=0 i
  for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
  echo $(((100 * (b[4] - a[4] + b[5] - a[5])) / (total > 0 ? total : 1)))
}
wait_quiet() {
  local waited=0 idle
  while idle=$(cpu_idle_pct); [ "$idle" -lt "$IDLE_PCT" ]; do
    if [ "$waited" -ge "$WAIT_S" ]; then
      echo "warning: CPUs only ${idle}% idle; timings will be distorted" >&2
      return
    fi
    sleep 5; waited=$((waited + 7))
  done
}

