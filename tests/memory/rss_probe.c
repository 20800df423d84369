/* rss_probe: how much resident memory (VmRSS) libflowrt holds at each stage of a session's life.
 *
 *   rss_probe MODEL BACKEND MAX_BATCH [PRECISION]   BACKEND: ref | onednn | cuda | auto,
 *                                                   PRECISION: fp32 (default) | bf16
 *
 * Prints one line, in kB:
 *   rss_kb start=S open=O session=C sample=A encode=E peak=P file_kb=F
 * start: the library loaded, nothing opened; open: after flowrt_model_open (the verified model,
 * its file mapped and read); session: after flowrt_session_create at MAX_BATCH; sample: after
 * flowrt_sample of MAX_BATCH images; encode: after flowrt_encode of those images; peak: VmHWM at
 * the end; file_kb: the model file's size. Then, with glibc, the heap (malloc'd bytes in use,
 * mmapped chunks included) the same stages hold, in kB:
 *   heap_kb open=O session=C sample=A encode=E      (relative to start)
 * Exits 1 with flowrt_last_error() on any failure (3 when the session is refused as
 * unsupported). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
#include <malloc.h>
#define PROBE_HEAP 1
#endif

#include "flowrt.h"
#include "probe_session.h"

/* The value of `key` ("VmRSS:", "VmHWM:") in /proc/self/status, in kB; -1 if unreadable. */
static long status_kb(const char *key) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kb = -1;
  size_t n = strlen(key);
  if (!f) return -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, key, n) == 0) {
      kb = strtol(line + n, NULL, 10);
      break;
    }
  fclose(f);
  return kb;
}

/* Bytes malloc has handed out and not taken back, in kB (-1 without glibc's mallinfo2). */
static long heap_kb(void) {
#ifdef PROBE_HEAP
  struct mallinfo2 m = mallinfo2();
  return (long)((m.uordblks + m.hblkhd) / 1024);
#else
  return -1;
#endif
}

static int fail(const char *what, flowrt_status st) {
  fprintf(stderr, "rss_probe: %s failed: %s: %s\n", what, flowrt_status_string(st),
          flowrt_last_error());
  return st == FLOWRT_UNSUPPORTED ? 3 : 1;
}

int main(int argc, char **argv) {
  flowrt_model *model = NULL;
  const char *failed = NULL;
  flowrt_session *session = NULL;
  flowrt_backend backend;
  flowrt_precision precision = FLOWRT_PRECISION_FP32;
  flowrt_status st;
  long start, opened, created, sampled, encoded, peak, file_kb = -1;
  long heap[5];
  size_t dims = 0, max_batch;
  unsigned char *pixels;
  double *bpd;
  char *end = NULL;
  FILE *f;

  if (argc != 4 && argc != 5) {
    fprintf(stderr, "usage: %s MODEL BACKEND(ref|onednn|cuda|auto) MAX_BATCH [fp32|bf16]\n",
            argv[0]);
    return 2;
  }
  if (argc == 5 && !probe_precision(argv[4], &precision)) {
    fprintf(stderr, "rss_probe: unknown precision '%s'\n", argv[4]);
    return 2;
  }
  if (!probe_backend(argv[2], &backend)) {
    fprintf(stderr, "rss_probe: unknown backend '%s'\n", argv[2]);
    return 2;
  }
  max_batch = (size_t)strtoul(argv[3], &end, 10);
  if (!end || *end || max_batch < 1) {
    fprintf(stderr, "rss_probe: MAX_BATCH must be a positive integer, got '%s'\n", argv[3]);
    return 2;
  }
  f = fopen(argv[1], "rb");
  if (f) {
    if (fseek(f, 0, SEEK_END) == 0) file_kb = ftell(f) / 1024;
    fclose(f);
  }

  start = status_kb("VmRSS:");
  heap[0] = heap_kb();
  if ((st = flowrt_model_open(argv[1], &model)) != FLOWRT_OK) return fail("flowrt_model_open", st);
  opened = status_kb("VmRSS:");
  heap[1] = heap_kb();
  if ((st = flowrt_model_latent_dim(model, &dims)) != FLOWRT_OK)
    return fail("flowrt_model_latent_dim", st);
  /* The probe's own buffers are allocated and touched before the session is measured. */
  pixels = malloc(max_batch * dims);
  bpd = malloc(max_batch * sizeof(double));
  if (!pixels || !bpd) {
    fprintf(stderr, "rss_probe: out of memory\n");
    return 1;
  }
  memset(pixels, 0, max_batch * dims);
  memset(bpd, 0, max_batch * sizeof(double));

  if ((st = probe_session(model, backend, precision, max_batch, 0, &session, &failed)) != FLOWRT_OK)
    return fail(failed, st);
  created = status_kb("VmRSS:");
  heap[2] = heap_kb();
  if ((st = flowrt_sample(session, max_batch, 0.7f, 1, pixels)) != FLOWRT_OK)
    return fail("flowrt_sample", st);
  sampled = status_kb("VmRSS:");
  heap[3] = heap_kb();
  if ((st = flowrt_encode(session, max_batch, pixels, NULL, bpd)) != FLOWRT_OK)
    return fail("flowrt_encode", st);
  encoded = status_kb("VmRSS:");
  heap[4] = heap_kb();
  peak = status_kb("VmHWM:");

  printf("rss_kb start=%ld open=%ld session=%ld sample=%ld encode=%ld peak=%ld file_kb=%ld\n",
         start, opened, created, sampled, encoded, peak, file_kb);
  if (heap[0] >= 0)
    printf("heap_kb open=%ld session=%ld sample=%ld encode=%ld\n", heap[1] - heap[0],
           heap[2] - heap[0], heap[3] - heap[0], heap[4] - heap[0]);
  printf("backend=%s max_batch=%lu bits_per_dim[0]=%.6f\n",
         flowrt_backend_name(flowrt_session_backend(session)), (unsigned long)max_batch, bpd[0]);
  flowrt_session_free(session);
  flowrt_model_free(model);
  free(pixels);
  free(bpd);
  return 0;
}
