/* The interface between libflowrt and a backend plugin (libflowrt-onednn.so, libflowrt-cuda.so).
 * A plugin exports one C symbol, flowrt_backend_plugin_entry, that returns a static
 * flowrt_plugin. The core checks the fields in order, and refuses the plugin with a message
 * that names what differs: `abi` (this header's version), `release` (the flowrt release the
 * plugin was built from) and `layout` (a fingerprint of the C++ types the core hands over:
 * a Graph and a BackendOptions are passed as opaque pointers and read by the plugin's copy of
 * the same code, so both sides must come from one release and one compiler ABI).
 *
 * Every call returns a flowrt_status; on failure the plugin writes its message into `error`.
 * No exception crosses the boundary: each side catches its own. */
#ifndef FLOWRT_PLUGIN_ABI_H
#define FLOWRT_PLUGIN_ABI_H

#include <stddef.h>
#include <stdint.h>

#include "flowrt.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever a struct below or the meaning of a call changes. */
#define FLOWRT_PLUGIN_ABI 1
#define FLOWRT_PLUGIN_ENTRY "flowrt_backend_plugin_entry"

typedef struct flowrt_plugin_error {
  char message[1024];
} flowrt_plugin_error;

/* One backend instance made by a plugin: an opaque object and its operations (see
 * runtime/src/backends/backend.hpp for what each computes). */
typedef struct flowrt_plugin_backend {
  void *self;
  void (*destroy)(void *self);
  flowrt_status (*encode)(void *self, size_t n, const float *x, const int32_t *labels, float *z,
                          double *log_p, double *log_det, flowrt_plugin_error *error);
  flowrt_status (*decode)(void *self, size_t n, const float *z, float *x,
                          flowrt_plugin_error *error);
  flowrt_status (*decode_noise)(void *self, size_t n, const float *eps, float temperature,
                                const int32_t *labels, float *x, flowrt_plugin_error *error);
  flowrt_status (*sample)(void *self, size_t n, uint64_t seed, uint64_t first_image,
                          float temperature, const int32_t *labels, float *eps_scratch, float *x,
                          flowrt_plugin_error *error);
  /* The kernels it runs at batch n, one per line, into out (at most out_size bytes with the
   * final NUL; longer lists are cut at a line). Empty when the backend does not say. */
  flowrt_status (*kernels)(void *self, size_t n, char *out, size_t out_size,
                           flowrt_plugin_error *error);
} flowrt_plugin_backend;

typedef struct flowrt_plugin {
  uint32_t abi;         /* FLOWRT_PLUGIN_ABI: always the first field, read before anything else */
  uint32_t struct_size; /* sizeof(flowrt_plugin) */
  const char *release;  /* "MAJOR.MINOR.PATCH" of the flowrt it was built from */
  const char *layout;   /* fingerprint of the C++ types passed through `create` */
  flowrt_backend kind;  /* the backend it provides */
  const char *description; /* one line for `flowrt backends`, e.g. "oneDNN 2.6.3 (CPU)" */
  /* FLOWRT_OK if the backend can run on `device` here; else why not, in `error`. */
  flowrt_status (*available)(int device, flowrt_plugin_error *error);
  /* graph: const flowrt::Graph *, options: const flowrt::BackendOptions *. */
  flowrt_status (*create)(const void *graph, const void *options, flowrt_plugin_backend *out,
                          flowrt_plugin_error *error);
} flowrt_plugin;

typedef const flowrt_plugin *(*flowrt_plugin_entry_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* FLOWRT_PLUGIN_ABI_H */
