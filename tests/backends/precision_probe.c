/* precision_probe: a oneDNN session at a precision, in steady state, for bf16_kernels.sh and
 * fp32_steady_state.sh to read oneDNN's verbose log of.
 *
 *   precision_probe MODEL PRECISION BATCH      PRECISION: fp32 | bf16
 *
 * Creates the session at max batch BATCH, samples and encodes BATCH images once (warm-up), then
 * prints "precision_probe: steady state", samples and encodes them again and prints
 * "precision_probe: done". Every primitive and every prepared weight exists before the marker,
 * so whatever oneDNN executes after it runs on every call. Exits 3 with flowrt_last_error() when
 * the session is refused as unsupported, 1 on any other failure. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowrt.h"
#include "probe_session.h"

static int fail(const char *what, flowrt_status st) {
  fprintf(stderr, "precision_probe: %s failed: %s: %s\n", what, flowrt_status_string(st),
          flowrt_last_error());
  return st == FLOWRT_UNSUPPORTED ? 3 : 1;
}

static int run(flowrt_session *s, size_t n, unsigned char *pixels, double *bpd) {
  flowrt_status st;
  if ((st = flowrt_sample(s, n, 0.7f, 1, pixels)) != FLOWRT_OK) return fail("flowrt_sample", st);
  if ((st = flowrt_encode(s, n, pixels, NULL, bpd)) != FLOWRT_OK) return fail("flowrt_encode", st);
  return 0;
}

int main(int argc, char **argv) {
  flowrt_model *model = NULL;
  const char *failed = NULL;
  flowrt_session *session = NULL;
  flowrt_precision precision;
  flowrt_status st;
  size_t dims = 0, n;
  unsigned char *pixels;
  double *bpd;
  char *end = NULL;
  int rc;

  if (argc != 4) {
    fprintf(stderr, "usage: %s MODEL PRECISION(fp32|bf16) BATCH\n", argv[0]);
    return 2;
  }
  if (!probe_precision(argv[2], &precision)) {
    fprintf(stderr, "precision_probe: unknown precision '%s'\n", argv[2]);
    return 2;
  }
  n = (size_t)strtoul(argv[3], &end, 10);
  if (!end || *end || n < 1) {
    fprintf(stderr, "precision_probe: BATCH must be a positive integer, got '%s'\n", argv[3]);
    return 2;
  }
  if ((st = flowrt_model_open(argv[1], &model)) != FLOWRT_OK) return fail("flowrt_model_open", st);
  if ((st = flowrt_model_latent_dim(model, &dims)) != FLOWRT_OK)
    return fail("flowrt_model_latent_dim", st);
  pixels = malloc(n * dims);
  bpd = malloc(n * sizeof(double));
  if (!pixels || !bpd) {
    fprintf(stderr, "precision_probe: out of memory\n");
    return 1;
  }
  if ((st = probe_session(model, FLOWRT_BACKEND_ONEDNN, precision, n, 0, &session, &failed)) !=
      FLOWRT_OK)
    return fail(failed, st);
  if ((rc = run(session, n, pixels, bpd)) != 0) return rc;
  printf("precision_probe: steady state\n");
  fflush(stdout);
  if ((rc = run(session, n, pixels, bpd)) != 0) return rc;
  printf("precision_probe: done, bits/dim[0] %.4f\n", bpd[0]);
  flowrt_session_free(session);
  flowrt_model_free(model);
  free(pixels);
  free(bpd);
  return 0;
}
