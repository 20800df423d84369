/*
 * flowrt_web.c — the C side of the browser demo: libflowrt compiled to WebAssembly, driven by
 * worker.js. One model and one session at a time; every function returns a flowrt_status and
 * web_error() says what went wrong, as with the C API it wraps.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "flowrt.h"

#ifdef __EMSCRIPTEN__
#include <emscripten/emscripten.h>
#define WEB_EXPORT EMSCRIPTEN_KEEPALIVE
#else
#define WEB_EXPORT
#endif

static flowrt_model *g_model = NULL;
static flowrt_session *g_session = NULL;
static char g_error[512];

static int fail(flowrt_status st) {
  if (st != FLOWRT_OK) {
    strncpy(g_error, flowrt_last_error(), sizeof g_error - 1);
    g_error[sizeof g_error - 1] = '\0';
  }
  return (int)st;
}

WEB_EXPORT const char *web_error(void) {
  return g_error;
}

WEB_EXPORT void web_close(void) {
  flowrt_session_free(g_session);
  flowrt_model_free(g_model);
  g_session = NULL;
  g_model = NULL;
}

/* Opens a .flow from bytes (copied) with a session for batches of up to max_batch. */
WEB_EXPORT int web_open(const void *bytes, size_t size, int max_batch) {
  web_close();
  flowrt_status st = flowrt_model_from_memory(bytes, size, &g_model);
  if (st != FLOWRT_OK) return fail(st);
  flowrt_session_options *o = NULL;
  st = flowrt_session_options_create(&o);
  if (st == FLOWRT_OK) st = flowrt_session_options_set_max_batch(o, (size_t)max_batch);
  if (st == FLOWRT_OK) st = flowrt_session_create(g_model, o, &g_session);
  flowrt_session_options_free(o);
  if (st != FLOWRT_OK) {
    int rc = fail(st);
    web_close();
    return rc;
  }
  return 0;
}

/* shape[0..3] = C, H, W, n_bits; returns the session's backend name through *backend. */
WEB_EXPORT int web_info(int *shape, const char **backend) {
  if (!g_model) return fail(flowrt_model_image_shape(NULL, NULL, NULL, NULL));
  flowrt_status st = flowrt_model_image_shape(g_model, &shape[0], &shape[1], &shape[2]);
  if (st == FLOWRT_OK) st = flowrt_model_n_bits(g_model, &shape[3]);
  if (st == FLOWRT_OK) *backend = flowrt_backend_name(flowrt_session_backend(g_session));
  return fail(st);
}

/* n images at `temperature` from the stream of `seed` into pixels (n*C*H*W bytes). */
WEB_EXPORT int web_sample(int n, float temperature, uint32_t seed, uint8_t *pixels) {
  return fail(flowrt_sample(g_session, (size_t)n, temperature, seed, pixels));
}

/* Bits/dim of n images of pixels. */
WEB_EXPORT int web_encode(int n, const uint8_t *pixels, double *bits_per_dim) {
  return fail(flowrt_encode(g_session, (size_t)n, pixels, NULL, bits_per_dim));
}
