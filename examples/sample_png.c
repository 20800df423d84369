/*
 * sample_png.c — embeds libflowrt through its C API only: opens a .flow model, samples images,
 * writes them as PNG files, then encodes them again (bits/dim) and decodes the latents back.
 *
 *   sample_png MODEL.flow OUT_PREFIX [N] [TEMPERATURE] [SEED]
 *
 * writes OUT_PREFIX0.png .. OUT_PREFIX{N-1}.png and prints each image's bits/dim.
 */
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "flowrt.h"

static int fail(const char *what, flowrt_status status) {
  fprintf(stderr, "sample_png: %s: %s: %s\n", what, flowrt_status_string(status),
          flowrt_last_error());
  return 1;
}

/* NCHW planes -> interleaved rows, as libpng wants. */
static int write_png(const char *path, const uint8_t *chw, int c, int h, int w) {
  png_image img;
  uint8_t *hwc = malloc((size_t)c * h * w);
  int ok;
  if (!hwc) return 0;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int k = 0; k < c; ++k) hwc[(y * w + x) * c + k] = chw[(k * h + y) * w + x];
  memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  img.width = (png_uint_32)w;
  img.height = (png_uint_32)h;
  img.format = c == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
  ok = png_image_write_to_file(&img, path, 0, hwc, 0, NULL);
  free(hwc);
  return ok;
}

int main(int argc, char **argv) {
  flowrt_model *model = NULL;
  flowrt_session_options *options = NULL;
  flowrt_session *session = NULL;
  flowrt_status st;
  int c, h, w, rc = 1;
  size_t dim, n;
  float temperature;
  uint64_t seed;
  uint8_t *pixels = NULL, *again = NULL;
  float *z = NULL;
  double *bpd = NULL;

  if (argc < 3) {
    fprintf(stderr, "usage: %s MODEL.flow OUT_PREFIX [N] [TEMPERATURE] [SEED]\n", argv[0]);
    return 2;
  }
  n = argc > 3 ? (size_t)strtoul(argv[3], NULL, 10) : 4;
  temperature = argc > 4 ? (float)atof(argv[4]) : 0.7f;
  seed = argc > 5 ? (uint64_t)strtoull(argv[5], NULL, 10) : 1;
  if (n < 1 || n > 1024) {
    fprintf(stderr, "sample_png: N must be in [1, 1024]\n");
    return 2;
  }

  if ((st = flowrt_model_open(argv[1], &model)) != FLOWRT_OK) return fail("open", st);
  flowrt_model_image_shape(model, &c, &h, &w);
  flowrt_model_latent_dim(model, &dim);
  printf("flowrt %s, model %dx%dx%d\n", flowrt_version(), c, h, w);

  if ((st = flowrt_session_options_create(&options)) != FLOWRT_OK) {
    rc = fail("options", st);
    goto done;
  }
  flowrt_session_options_set_max_batch(options, n);
  if ((st = flowrt_session_create(model, options, &session)) != FLOWRT_OK) {
    rc = fail("session", st);
    goto done;
  }
  printf("backend: %s\n", flowrt_backend_name(flowrt_session_backend(session)));

  pixels = malloc(n * dim);
  again = malloc(n * dim);
  z = malloc(n * dim * sizeof(float));
  bpd = malloc(n * sizeof(double));
  if (!pixels || !again || !z || !bpd) {
    fprintf(stderr, "sample_png: out of memory\n");
    goto done;
  }
  if ((st = flowrt_sample(session, n, temperature, seed, pixels)) != FLOWRT_OK) {
    rc = fail("sample", st);
    goto done;
  }
  if ((st = flowrt_encode(session, n, pixels, z, bpd)) != FLOWRT_OK) {
    rc = fail("encode", st);
    goto done;
  }
  if ((st = flowrt_decode(session, n, z, NULL, again)) != FLOWRT_OK) {
    rc = fail("decode", st);
    goto done;
  }
  for (size_t i = 0; i < n; ++i) {
    char path[4096];
    size_t changed = 0;
    for (size_t k = 0; k < dim; ++k) changed += pixels[i * dim + k] != again[i * dim + k];
    snprintf(path, sizeof path, "%s%zu.png", argv[2], i);
    if (!write_png(path, pixels + i * dim, c, h, w)) {
      fprintf(stderr, "sample_png: cannot write %s\n", path);
      goto done;
    }
    printf("%s: %.4f bits/dim, %zu pixels changed by encode+decode\n", path, bpd[i], changed);
  }
  rc = 0;

done:
  free(pixels);
  free(again);
  free(z);
  free(bpd);
  flowrt_session_free(session);
  flowrt_session_options_free(options);
  flowrt_model_free(model);
  return rc;
}
