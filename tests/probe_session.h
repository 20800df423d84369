/* What the small C probes of the test suite (rss_probe, oom_probe, precision_probe) share: the
 * names they take on their command lines, and one session made through the public API. */
#ifndef FLOWRT_TESTS_PROBE_SESSION_H
#define FLOWRT_TESTS_PROBE_SESSION_H

#include <stddef.h>
#include <string.h>

#include "flowrt.h"

/* "ref", "onednn", "cuda", "portable", "auto"; 0 for anything else. */
static inline int probe_backend(const char *name, flowrt_backend *out) {
  static const flowrt_backend all[] = {FLOWRT_BACKEND_REF, FLOWRT_BACKEND_ONEDNN,
                                       FLOWRT_BACKEND_CUDA, FLOWRT_BACKEND_PORTABLE,
                                       FLOWRT_BACKEND_AUTO};
  size_t i;
  for (i = 0; i < sizeof all / sizeof all[0]; ++i)
    if (strcmp(name, flowrt_backend_name(all[i])) == 0) {
      *out = all[i];
      return 1;
    }
  return 0;
}

/* "fp32", "bf16"; 0 for anything else. */
static inline int probe_precision(const char *name, flowrt_precision *out) {
  if (strcmp(name, "fp32") == 0)
    *out = FLOWRT_PRECISION_FP32;
  else if (strcmp(name, "bf16") == 0)
    *out = FLOWRT_PRECISION_BF16;
  else
    return 0;
  return 1;
}

/* A session on `model`; threads 0: all cores. On failure, `*failed` names the call. */
static inline flowrt_status probe_session(const flowrt_model *model, flowrt_backend backend,
                                          flowrt_precision precision, size_t max_batch, int threads,
                                          flowrt_session **out, const char **failed) {
  flowrt_session_options *opt = NULL;
  flowrt_status st;
  *out = NULL;
  if ((st = flowrt_session_options_create(&opt)) != FLOWRT_OK) {
    *failed = "flowrt_session_options_create";
    return st;
  }
  if ((st = flowrt_session_options_set_backend(opt, backend)) != FLOWRT_OK)
    *failed = "flowrt_session_options_set_backend";
  else if ((st = flowrt_session_options_set_precision(opt, precision)) != FLOWRT_OK)
    *failed = "flowrt_session_options_set_precision";
  else if ((st = flowrt_session_options_set_threads(opt, threads)) != FLOWRT_OK)
    *failed = "flowrt_session_options_set_threads";
  else if ((st = flowrt_session_options_set_max_batch(opt, max_batch)) != FLOWRT_OK)
    *failed = "flowrt_session_options_set_max_batch";
  else if ((st = flowrt_session_create(model, opt, out)) != FLOWRT_OK)
    *failed = "flowrt_session_create";
  flowrt_session_options_free(opt);
  return st;
}

#endif
