/* oom_probe: what libflowrt does when the address space runs out (run under `ulimit -v`).
 *
 *   oom_probe vm [MODEL BACKEND]         prints this program's VmPeak (kB) with libflowrt loaded
 *                                        (and after a max-batch-1 session on MODEL, sampling)
 *   oom_probe open MODEL                 opens MODEL: exits 3 on FLOWRT_OUT_OF_MEMORY
 *   oom_probe session MODEL BACKEND BIG  a session at max batch BIG must fail with
 *                                        FLOWRT_OUT_OF_MEMORY; then one at max batch 1 on the same
 *                                        model must sample and encode (the model is still usable)
 *
 * Every failure prints the status and flowrt_last_error() on one line; exit 0 means the
 * expected outcome, 1 an unexpected one, 3 (open) an out-of-memory refusal. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowrt.h"
#include "probe_session.h"

static long vm_peak_kb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kb = -1;
  if (!f) return -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "VmPeak:", 7) == 0) kb = strtol(line + 7, NULL, 10);
  fclose(f);
  return kb;
}

/* A 1-thread fp32 session at max batch `batch`. */
static flowrt_status make_session(const flowrt_model *m, flowrt_backend b, size_t batch,
                                  flowrt_session **s) {
  const char *failed = NULL;
  return probe_session(m, b, FLOWRT_PRECISION_FP32, batch, 1, s, &failed);
}

int main(int argc, char **argv) {
  flowrt_model *m = NULL;
  flowrt_session *s = NULL;
  flowrt_status st;
  flowrt_backend backend = FLOWRT_BACKEND_REF;
  unsigned char pixels[4096];
  double bpd = 0;
  size_t dims = 0, big;

  if ((argc == 2 || argc == 4) && strcmp(argv[1], "vm") == 0) {
    if (argc == 4) {
      if (!probe_backend(argv[3], &backend)) return 2;
      if ((st = flowrt_model_open(argv[2], &m)) != FLOWRT_OK ||
          (st = make_session(m, backend, 1, &s)) != FLOWRT_OK ||
          (st = flowrt_sample(s, 1, 0.7f, 1, pixels)) != FLOWRT_OK) {
        printf("vm: %s: %s\n", flowrt_status_string(st), flowrt_last_error());
        return 1;
      }
      flowrt_session_free(s);
      flowrt_model_free(m);
    }
    printf("%ld\n", vm_peak_kb());
    return 0;
  }
  if (argc == 3 && strcmp(argv[1], "open") == 0) {
    st = flowrt_model_open(argv[2], &m);
    printf("open: %s: %s\n", flowrt_status_string(st), st == FLOWRT_OK ? "" : flowrt_last_error());
    flowrt_model_free(m);
    return st == FLOWRT_OK ? 0 : st == FLOWRT_OUT_OF_MEMORY ? 3 : 1;
  }
  if (argc != 5 || strcmp(argv[1], "session") != 0) {
    fprintf(stderr,
            "usage: %s vm [MODEL BACKEND] | open MODEL | session MODEL ref|onednn BIG_BATCH\n",
            argv[0]);
    return 2;
  }
  if (!probe_backend(argv[3], &backend)) {
    fprintf(stderr, "oom_probe: unknown backend '%s'\n", argv[3]);
    return 2;
  }
  big = (size_t)strtoul(argv[4], NULL, 10);
  if ((st = flowrt_model_open(argv[2], &m)) != FLOWRT_OK) {
    printf("open: %s: %s\n", flowrt_status_string(st), flowrt_last_error());
    return 1;
  }
  flowrt_model_latent_dim(m, &dims);
  if (dims > sizeof pixels) {
    printf("the model's images have more than %zu values\n", sizeof pixels);
    return 1;
  }
  st = make_session(m, backend, big, &s);
  printf("session at max batch %zu: %s: %s\n", big, flowrt_status_string(st),
         st == FLOWRT_OK ? "" : flowrt_last_error());
  if (st != FLOWRT_OUT_OF_MEMORY || s) {
    flowrt_session_free(s);
    flowrt_model_free(m);
    return 1;
  }
  if ((st = make_session(m, backend, 1, &s)) != FLOWRT_OK ||
      (st = flowrt_sample(s, 1, 0.7f, 1, pixels)) != FLOWRT_OK ||
      (st = flowrt_encode(s, 1, pixels, NULL, &bpd)) != FLOWRT_OK) {
    printf("afterwards, at max batch 1: %s: %s\n", flowrt_status_string(st), flowrt_last_error());
    return 1;
  }
  printf("afterwards, at max batch 1 on %s: sample and encode ok, %.4f bits/dim\n",
         flowrt_backend_name(flowrt_session_backend(s)), bpd);
  flowrt_session_free(s);
  flowrt_model_free(m);
  return 0;
}
