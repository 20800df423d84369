/*
 * flowrt.h — the C API of libflowrt.
 *
 * libflowrt runs normalizing flows of the Glow family (Glow, RealNVP, NICE) stored in `.flow`
 * files: it samples images (the decoder, with a temperature) and scores images (the encoder:
 * exact log-likelihood and bits/dim).
 *
 * Conventions
 * - Every function that can fail returns a flowrt_status; FLOWRT_OK is 0. On failure,
 *   flowrt_last_error() returns a message naming what is wrong. It is thread-local and stays
 *   valid until the next flowrt call on the same thread.
 * - The library never throws, never aborts and never prints.
 * - Handles are opaque. The caller owns every buffer it passes in; the library owns the handles it
 *   creates and releases them in the matching *_free (which accepts NULL).
 * - A flowrt_model is immutable: any number of sessions on any number of threads may share it.
 *   A flowrt_session is used by one thread at a time (a second concurrent call fails with
 *   FLOWRT_BUSY). A session keeps what it needs of its model alive: models and sessions may be
 *   freed in any order.
 * - Images are NCHW. Pixels are uint8 in [0, 255]; a model with n_bits < 8 reads the top n_bits
 *   bits and writes its n_bits values into the top bits (p << (8 - n_bits)), so encode(decode())
 *   is consistent.
 * - The network's continuous input is x = p / 2^n_bits - 0.5 + 0.5 / 2^n_bits for a pixel with
 *   n_bits value p (the bin centre), so x lies in (-0.5, 0.5).
 * - Latents z: per image, the latents of every level in the order they leave the flow (the first
 *   split first, the top level last), each in CHW order, flattened; images follow each other.
 *   flowrt_model_latent_dim() gives the floats per image, which always equals C*H*W.
 * - Any batch size n works: a session processes batches larger than its maximum batch in chunks,
 *   with the same results.
 */
#ifndef FLOWRT_H
#define FLOWRT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(FLOWRT_STATIC_DEFINE)
#define FLOWRT_API
#elif defined(_WIN32)
#ifdef FLOWRT_BUILDING
#define FLOWRT_API __declspec(dllexport)
#else
#define FLOWRT_API __declspec(dllimport)
#endif
#else
#define FLOWRT_API __attribute__((visibility("default")))
#endif

#define FLOWRT_VERSION_MAJOR 0
#define FLOWRT_VERSION_MINOR 1
#define FLOWRT_VERSION_PATCH 0

/* Status codes. Values are stable; new codes are only appended. */
typedef enum flowrt_status {
  FLOWRT_OK = 0,
  FLOWRT_INVALID_ARGUMENT = 1, /* a NULL pointer, a size that does not fit, a NaN input... */
  FLOWRT_IO_ERROR = 2,         /* a file could not be opened or read */
  FLOWRT_FORMAT_ERROR = 3,     /* the bytes are not a valid .flow model */
  FLOWRT_UNSUPPORTED = 4,      /* valid, but not supported (newer format, backend not built) */
  FLOWRT_OUT_OF_MEMORY = 5,
  FLOWRT_DEVICE_ERROR = 6, /* the requested device is missing or failed ("no device") */
  FLOWRT_BUSY = 7,         /* the session is in use by another thread */
  FLOWRT_INTERNAL_ERROR = 8
} flowrt_status;

typedef enum flowrt_backend {
  FLOWRT_BACKEND_AUTO = 0,    /* CUDA if its plugin loads and a device is present, else oneDNN if
                                 its plugin loads, else PORTABLE */
  FLOWRT_BACKEND_REF = 1,     /* portable C++, the reference every other backend is tested on */
  FLOWRT_BACKEND_ONEDNN = 2,  /* CPU, oneDNN */
  FLOWRT_BACKEND_CUDA = 3,    /* NVIDIA GPU */
  FLOWRT_BACKEND_PORTABLE = 4 /* CPU without oneDNN (ARM boards, WebAssembly, minimal installs):
                                 plain C++ with OpenMP when present, always built in like REF. The
                                 reference flow with its nets' convolutions run as cache-blocked
                                 GEMMs on weights packed once at session creation (its one copy
                                 of them), images of a call batched together; on x86 the kernels
                                 for AVX-512F, AVX2+FMA and the build's baseline are built and the
                                 widest the CPU runs is used. FP32 only. */
} flowrt_backend;

/* Arithmetic of the matrix products (convolutions and 1x1 convolutions). FP32, the default, is
 * the only exact one and the one to use where encode and decode must invert each other.
 * - CUDA (Ampere and newer): TF32, BF16 and FP16 run the products on tensor cores with the
 *   inputs rounded to the named format and float accumulation; everything else (element-wise
 *   operations, reductions, log-densities, activations in memory) stays float.
 * - ONEDNN: BF16 on CPUs with bf16 units (AVX512_BF16 or AMX; oneDNN ISA avx512_core_bf16 or
 *   avx512_core_amx, else session creation fails with FLOWRT_UNSUPPORTED naming the CPU's ISA).
 *   The coupling nets' and priors' convolutions read bf16 activations and bf16 weights
 *   (converted once at session creation) and accumulate in float; their hidden layers are
 *   stored in bf16, their outputs in float. The invertible 1x1 convolutions and their inverses,
 *   actnorms, coupling arithmetic, priors, sampling and log-determinants stay float.
 * - REF, PORTABLE: FP32 only.
 * BF16 is faster, not exact, and NOT exactly invertible: decode(encode(x)) differs from x in
 * some 8-bit pixels, bits/dim shift slightly, and both errors grow with the depth of the flow and
 * with how ill-conditioned its couplings are (trained models fare far better than random ones).
 * flowbench --precision NAME --check measures them against fp32 on a given model and images.
 * Values are stable across releases (new ones are appended). */
typedef enum flowrt_precision {
  FLOWRT_PRECISION_FP32 = 0, /* IEEE float throughout (the default) */
  FLOWRT_PRECISION_TF32 = 1, /* CUDA: TF32 inputs (8-bit exponent, 10-bit mantissa) */
  FLOWRT_PRECISION_BF16 = 2, /* CUDA, ONEDNN: bfloat16 inputs (8-bit exponent, 7-bit mantissa) */
  FLOWRT_PRECISION_FP16 = 3  /* CUDA: IEEE half inputs (5-bit exponent, 10-bit mantissa; inputs
                                beyond +-65504 overflow) */
} flowrt_precision;

typedef struct flowrt_model flowrt_model;
typedef struct flowrt_session flowrt_session;
typedef struct flowrt_session_options flowrt_session_options;

/* ---- Library ------------------------------------------------------------------------------ */

/* "MAJOR.MINOR.PATCH" of the library that is linked. */
FLOWRT_API const char *flowrt_version(void);
/* The highest .flow format_major this library reads. */
FLOWRT_API int flowrt_format_major_supported(void);
/* Static text for a status ("FLOWRT_FORMAT_ERROR"). */
FLOWRT_API const char *flowrt_status_string(flowrt_status status);
/* The message of the last failure on this thread ("" if none). */
FLOWRT_API const char *flowrt_last_error(void);
/* 1 if the backend can run here, else 0 and flowrt_last_error() says why. REF, PORTABLE and
 * AUTO are always available. With a shared libflowrt, ONEDNN and CUDA are plugins
 * (libflowrt-onednn.so, libflowrt-cuda.so) loaded on first use from the library's own directory,
 * then from each directory of FLOWRT_BACKEND_PATH; the reason names the plugin file and, when the
 * plugin's own dependency is missing, that library. CUDA also needs a driver and device 0. */
FLOWRT_API int flowrt_backend_available(flowrt_backend backend);
/* Static name: "auto", "ref", "onednn", "cuda", "portable". */
FLOWRT_API const char *flowrt_backend_name(flowrt_backend backend);

/* ---- Models ------------------------------------------------------------------------------- */

/* Opens a .flow file. The file is memory-mapped (read into memory where mapping fails) and
 * verified completely before this returns: structure, shapes, tensor sizes, finite values and
 * invertible 1x1 convolutions. */
FLOWRT_API flowrt_status flowrt_model_open(const char *path, flowrt_model **out);
/* Same from bytes in memory. The bytes are COPIED: the caller may free them on return. */
FLOWRT_API flowrt_status flowrt_model_from_memory(const void *data, size_t size,
                                                  flowrt_model **out);
FLOWRT_API void flowrt_model_free(flowrt_model *model);

FLOWRT_API flowrt_status flowrt_model_image_shape(const flowrt_model *model, int *c, int *h,
                                                  int *w);
FLOWRT_API flowrt_status flowrt_model_n_bits(const flowrt_model *model, int *n_bits);
/* Floats of z per image (= C*H*W). */
FLOWRT_API flowrt_status flowrt_model_latent_dim(const flowrt_model *model,
                                                 size_t *floats_per_image);
/* Number of latent levels (splits + 1) and the shape of level i's latent (0 = the first to leave
 * the flow, levels-1 = the top); their CHW sizes add up to the latent dim. */
FLOWRT_API flowrt_status flowrt_model_levels(const flowrt_model *model, int *levels);
FLOWRT_API flowrt_status flowrt_model_latent_shape(const flowrt_model *model, int level, int *c,
                                                   int *h, int *w, size_t *offset);
/* (offset: where level i starts in an image's z, in floats; any output pointer may be NULL.) */
/* Number of classes of a class-conditional top prior (0 when unconditional). */
FLOWRT_API flowrt_status flowrt_model_num_classes(const flowrt_model *model, int *n_classes);
/* Copies the metadata value of `key` (NUL-terminated, truncated to buf_size) into buf, and
 * stores its full length in *length. FLOWRT_INVALID_ARGUMENT when the key is missing. */
FLOWRT_API flowrt_status flowrt_model_metadata(const flowrt_model *model, const char *key,
                                               char *buf, size_t buf_size, size_t *length);

/* ---- Sessions ----------------------------------------------------------------------------- */

/* Options: an opaque object so that options can be added without breaking the ABI. Defaults:
 * backend AUTO, threads 0 (all cores), device 0, max batch 16. */
FLOWRT_API flowrt_status flowrt_session_options_create(flowrt_session_options **out);
FLOWRT_API void flowrt_session_options_free(flowrt_session_options *options);
FLOWRT_API flowrt_status flowrt_session_options_set_backend(flowrt_session_options *options,
                                                            flowrt_backend backend);
FLOWRT_API flowrt_status flowrt_session_options_set_threads(flowrt_session_options *options,
                                                            int threads);
FLOWRT_API flowrt_status flowrt_session_options_set_device(flowrt_session_options *options,
                                                           int device_index);
/* A precision the chosen backend does not implement (see flowrt_precision: REF and PORTABLE
 * anything but FP32; ONEDNN TF32, FP16, and BF16 on a CPU without bf16 units) makes session
 * creation fail with FLOWRT_UNSUPPORTED. With AUTO it applies where the backend AUTO picks
 * implements it, and the session runs fp32 elsewhere. Values outside the enum:
 * FLOWRT_INVALID_ARGUMENT. */
FLOWRT_API flowrt_status flowrt_session_options_set_precision(flowrt_session_options *options,
                                                              flowrt_precision precision);
/* Largest batch a single pass computes (1..65536); scratch memory is sized for it. */
FLOWRT_API flowrt_status flowrt_session_options_set_max_batch(flowrt_session_options *options,
                                                              size_t max_batch);

/* Creates a session: chooses the backend, uploads/reorders weights and allocates all scratch
 * memory for the maximum batch, so that later calls make no heap allocation of libflowrt's own
 * (oneDNN 2.6 itself allocates a few small blocks inside each primitive execution; the oneDNN
 * backend creates the primitives of a batch size it has not seen at that size's first call).
 * options may be NULL. */
FLOWRT_API flowrt_status flowrt_session_create(const flowrt_model *model,
                                               const flowrt_session_options *options,
                                               flowrt_session **out);
FLOWRT_API void flowrt_session_free(flowrt_session *session);
/* The backend the session runs on (never AUTO). */
FLOWRT_API flowrt_backend flowrt_session_backend(const flowrt_session *session);

/* ---- Compute ------------------------------------------------------------------------------ */

/* Samples n images at `temperature` (>= 0; 0 gives each prior's mean, 0.7 the best-looking Glow
 * samples). The noise is a counter-based stream keyed by (seed, image index, element), so image
 * i is the same whatever n and whatever the backend. pixels: n*C*H*W bytes. */
FLOWRT_API flowrt_status flowrt_sample(flowrt_session *session, size_t n, float temperature,
                                       uint64_t seed, uint8_t *pixels);
/* As flowrt_sample for a class-conditional model: labels[i] in [0, n_classes). */
FLOWRT_API flowrt_status flowrt_sample_class(flowrt_session *session, size_t n, float temperature,
                                             uint64_t seed, const int32_t *labels, uint8_t *pixels);

/* Encodes n images of pixels. z (n*latent_dim floats) and bits_per_dim (n doubles) may be NULL.
 * bits/dim = -(log p(x) - D*log(2^n_bits)) / (D*ln 2), D = C*H*W, at the bin centre. */
FLOWRT_API flowrt_status flowrt_encode(flowrt_session *session, size_t n, const uint8_t *pixels,
                                       float *z, double *bits_per_dim);
/* Encodes continuous inputs x (n*C*H*W floats, in the network's range: what flowrt_decode
 * returns in x). Outputs as above; bits/dim uses the density of x with the same formula. */
FLOWRT_API flowrt_status flowrt_encode_float(flowrt_session *session, size_t n, const float *x,
                                             float *z, double *bits_per_dim);
/* The full form: labels may be NULL (unconditional); every output may be NULL. log_p is in
 * nats; log_det is log|det dz/dx|. */
FLOWRT_API flowrt_status flowrt_encode_ex(flowrt_session *session, size_t n, const float *x,
                                          const int32_t *labels, float *z, double *log_p,
                                          double *log_det, double *bits_per_dim);

/* Decodes latents z (n*latent_dim floats) to x (n*C*H*W floats) and/or pixels; either output
 * may be NULL. The priors are not used: z are the flow's own latents (what encode returns). */
FLOWRT_API flowrt_status flowrt_decode(flowrt_session *session, size_t n, const float *z, float *x,
                                       uint8_t *pixels);
/* Decodes standard-normal noise eps (n*latent_dim floats, same layout as z): each level's
 * latent is z = mean + temperature * std * eps, with its prior evaluated on the way down (what
 * flowrt_sample does with its own noise). labels may be NULL; either output may be NULL. */
FLOWRT_API flowrt_status flowrt_decode_noise(flowrt_session *session, size_t n, const float *eps,
                                             float temperature, const int32_t *labels, float *x,
                                             uint8_t *pixels);

/* ---- Latents and likelihood terms ----------------------------------------------------------
 * These walk the flow once per image and report what encode only sums up. They run on the
 * session's threads on the reference path whatever the session's backend (the first
 * call allocates its scratch for the session's maximum batch; later calls allocate nothing), so
 * they are slower than flowrt_encode on oneDNN or CUDA and use float throughout. labels may be
 * NULL (unconditional models). x is the network's continuous input (flowrt_pixels_to_x). */

/* Pixels (n*C*H*W bytes, top n_bits bits read) -> x at the bin centres (n*C*H*W floats), the
 * input flowrt_encode computes from pixels. */
FLOWRT_API flowrt_status flowrt_pixels_to_x(const flowrt_model *model, size_t n,
                                            const uint8_t *pixels, float *x);

/* The standardised latents of every level: eps = (z - mean) / std with each level's prior (the
 * split priors conditioned on the levels above, the top prior with the class offsets of
 * labels[i]); a split without a prior net has eps = z. eps: n*latent_dim floats in the layout of
 * z. The exact inverse of flowrt_decode_noise at temperature 1: decode_noise(encode_noise(x), 1)
 * reproduces x up to float rounding, hence the image's pixels exactly. */
FLOWRT_API flowrt_status flowrt_encode_noise(flowrt_session *session, size_t n, const float *x,
                                             const int32_t *labels, float *eps);

/* Per image and level (n*levels doubles each, image-major; level 0 = the first split, levels-1 =
 * the top, as flowrt_model_latent_shape): log_prior[i*levels+l] = log p(z_l | prior) in nats and
 * log_det[i*levels+l] = the log|det| of the flow steps between the previous split and level l's
 * split (the top level: those after the last split). For every image
 *   sum_l (log_prior + log_det) = log p(x)   (flowrt_encode_ex's log_p, to float rounding).
 * Either output may be NULL. */
FLOWRT_API flowrt_status flowrt_level_terms(flowrt_session *session, size_t n, const float *x,
                                            const int32_t *labels, double *log_prior,
                                            double *log_det);

/* The negative log-likelihood of each image spread over its pixel grid: nll[i*H*W + r*W + c]
 * (n*H*W doubles, nats). A step working on a grid made by s squeezes (each level's grid is
 * 2^s x 2^s pixels per position) attributes what it adds at grid position (u, v) evenly to the
 * pixels of block (u, v): each latent element's -log p under its prior, each coupling's
 * -log|scale| at that position (summed over its channels), and the position's share of an
 * actnorm's or 1x1 convolution's -log|det| (which is the same at every position). Hence
 *   sum over the H*W entries of image i = -log p(x_i)   (to float rounding). */
FLOWRT_API flowrt_status flowrt_nll_map(flowrt_session *session, size_t n, const float *x,
                                        const int32_t *labels, double *nll);

/* Fills eps (n*latent_dim floats) with the standard normals flowrt_sample uses for (seed,
 * images first_image .. first_image+n-1). */
FLOWRT_API flowrt_status flowrt_model_noise(const flowrt_model *model, size_t n, uint64_t seed,
                                            uint64_t first_image, float *eps);

#ifdef __cplusplus
}
#endif

#endif /* FLOWRT_H */
