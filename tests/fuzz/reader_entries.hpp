// The bodies of the fuzz targets for the readers that take users' files besides .flow: IDX
// (raw and gzip), the PNG input path of `flowrt score`, and training checkpoints. Shared by the
// libFuzzer harnesses (fuzz_idx.cpp, fuzz_png.cpp, fuzz_checkpoint.cpp) and the replay test of
// the saved corpora (tests/trainer/test_reader_fuzz_replay.cpp). Whatever the bytes, a reader must
// return data that satisfies its contract or throw flowrt::Error with a known status and a one-line
// message naming the input; any other exception, or a broken contract, is a `problem`.
#pragma once

#include <zlib.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "format/flow_file.hpp"
#include "image_io.hpp"
#include "model/program.hpp"
#include "trainer/model/train_compute.hpp"
#include "trainer/train/checkpoint.hpp"
#include "trainer/train/run_config.hpp"

namespace flowrt::fuzz {

struct ReaderResult {
  bool accepted = false;
  std::string error;    // the reader's message when it refused the input
  std::string problem;  // empty when every invariant held
};

// What a checkpoint's model may be and still be built inside the entry (it stays fast).
constexpr int64_t kMaxCheckpointDims = 4096;
constexpr double kMaxCheckpointFlops = 4e6;

// Runs `body`, turning what it throws into the result: flowrt::Error is a refusal (checked for a
// known status and a one-line message naming `name`), anything else a problem.
template <typename Body>
ReaderResult guarded(const std::string &name, Body body) {
  ReaderResult r;
  try {
    body(r);
    r.accepted = r.problem.empty();
  } catch (const Error &e) {
    r.error = e.what();
    if (e.status() <= FLOWRT_OK || e.status() > FLOWRT_INTERNAL_ERROR)
      r.problem = "unknown status in: " + r.error;
    else if (e.status() == FLOWRT_INTERNAL_ERROR)
      r.problem = "internal error: " + r.error;
    else if (r.error.empty() || r.error.find('\n') != std::string::npos)
      r.problem = "the message is not one line: '" + r.error + "'";
    else if (r.error.find(name) == std::string::npos)
      r.problem = "the message does not name the input: '" + r.error + "'";
  } catch (const std::exception &e) {
    r.problem = std::string("an exception other than flowrt::Error escaped: ") + e.what();
  }
  return r;
}

// The fuzzer mutates compressed bytes into mostly invalid streams; to reach the IDX parser behind
// valid gzip too, inputs whose first byte is odd are compressed by the entry itself.
inline std::vector<uint8_t> gzip_bytes(const uint8_t *data, size_t size) {
  z_stream zs{};
  if (deflateInit2(&zs, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) return {};
  std::vector<uint8_t> out(deflateBound(&zs, static_cast<uLong>(size)) + 32);
  zs.next_in = const_cast<Bytef *>(data);
  zs.avail_in = static_cast<uInt>(size);
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

// IDX: byte 0 picks the form (bit 0: gzip the rest here; bit 1: labels instead of images) and a
// limit (bits 2-7); the rest is the file. Images that load must be as announced and fit a model.
inline ReaderResult idx_entry(const uint8_t *data, size_t size) {
  const std::string name = "fuzz.idx";
  if (size == 0) return {};
  const uint8_t mode = data[0];
  std::vector<uint8_t> file(data + 1, data + size);
  if (mode & 1) file = gzip_bytes(file.data(), file.size());
  const int64_t limit = mode >> 2;
  return guarded(name, [&](ReaderResult &r) {
    if (mode & 2) {
      const std::vector<uint8_t> labels = decode_idx_labels(file.data(), file.size(), name, limit);
      if (limit > 0 && static_cast<int64_t>(labels.size()) > limit) r.problem = "limit ignored";
      return;
    }
    const ImageBatch b = decode_idx_images(file.data(), file.size(), name, limit);
    if (b.c != 1 || b.h < 1 || b.w < 1 || b.n < 0 ||
        static_cast<int64_t>(b.pixels.size()) != b.n * b.h * b.w) {
      r.problem = "decoded images do not match their shape";
      return;
    }
    if (limit > 0 && b.n > limit) r.problem = "limit ignored";
    // The trainer's conversion: grey 28x28 -> 32x32, grey -> RGB.
    if (b.h <= 32 && b.w <= 32 && b.n <= 64) {
      for (int64_t c : {1, 3}) {
        try {
          const ImageBatch f = fit_to_model(b, c, 32, 32);
          if (static_cast<int64_t>(f.pixels.size()) != b.n * c * 32 * 32)
            r.problem = "fit_to_model returned the wrong size";
        } catch (const Error &e) {
          if (e.status() != FLOWRT_INVALID_ARGUMENT)
            r.problem = "fit_to_model: " + std::string(e.what());
        }
      }
    }
  });
}

// The PNG path of `flowrt score` on a 3x32x32 (byte 0 even) or 1x28x28 (odd) model: the header
// bounds the image to the model before any pixels are allocated, then it is fitted to the model.
inline ReaderResult png_entry(const uint8_t *data, size_t size) {
  const std::string name = "fuzz.png";
  if (size == 0) return {};
  const bool grey = data[0] & 1;
  const int64_t c = grey ? 1 : 3, h = grey ? 28 : 32, w = h;
  return guarded(name, [&](ReaderResult &r) {
    ImageBatch b = decode_png(data + 1, size - 1, name, h, w);
    if ((b.c != 1 && b.c != 3) || b.n != 1 || b.h < 1 || b.w < 1 || b.h > h || b.w > w ||
        static_cast<int64_t>(b.pixels.size()) != b.c * b.h * b.w) {
      r.problem = "decoded image does not match its shape or the bound";
      return;
    }
    try {
      b = fit_to_model(b, c, h, w);
      if (static_cast<int64_t>(b.pixels.size()) != c * h * w) r.problem = "fit_to_model size";
    } catch (const Error &e) {
      if (e.status() != FLOWRT_INVALID_ARGUMENT)
        r.problem = "fit_to_model: " + std::string(e.what());
    }
  });
}

// Checkpoints as `flowtrain resume` reads them: the container, the settings, the model inside, and
// the parameters adopted by a CPU training model built from it. Byte 0 even: the rest is the
// payload, which the entry wraps in a valid container (magic, size, CRC) so that the fuzzer
// reaches the fields behind the checksum; odd: the rest is the whole file.
inline std::vector<uint8_t> wrap_checkpoint_payload(const uint8_t *payload, size_t size) {
  std::vector<uint8_t> f(16, 0);
  const char magic[16] = "FLOWTRAIN-CKPT1";
  std::memcpy(f.data(), magic, 16);
  auto u64 = [&](uint64_t v) {
    for (int i = 0; i < 8; ++i) f.push_back(static_cast<uint8_t>(v >> (8 * i)));
  };
  u64(size);
  f.insert(f.end(), payload, payload + size);
  u64(crc32_z(0L, payload, size));
  return f;
}

inline ReaderResult checkpoint_entry(const uint8_t *data, size_t size) {
  const std::string name = "fuzz.ckpt";
  if (size == 0) return {};
  const std::vector<uint8_t> file = (data[0] & 1) ? std::vector<uint8_t>(data + 1, data + size)
                                                  : wrap_checkpoint_payload(data + 1, size - 1);
  return guarded(name, [&](ReaderResult &r) {
    const train::Checkpoint c = train::parse_checkpoint(file.data(), file.size(), name);
    if (c.adam_m.size() != c.params.size() || c.adam_v.size() != c.params.size() ||
        (!c.ema.empty() && c.ema.size() != c.params.size()) || c.step < 0) {
      r.problem = "an inconsistent checkpoint was accepted";
      return;
    }
    try {
      (void)train::RunConfig::from_kv(c.config);
    } catch (const Error &e) {
      if (e.status() != FLOWRT_FORMAT_ERROR)
        r.problem = "settings: unexpected status: " + std::string(e.what());
      return;
    }
    Graph g;
    try {
      g = read_flow(copy_model_bytes(c.model_flow.data(), c.model_flow.size()));
    } catch (const Error &e) {
      if (e.status() != FLOWRT_FORMAT_ERROR && e.status() != FLOWRT_UNSUPPORTED &&
          e.status() != FLOWRT_OUT_OF_MEMORY)
        r.problem = "model: unexpected status: " + std::string(e.what());
      return;
    }
    if (g.dims() > kMaxCheckpointDims || count_flops(g).encode > kMaxCheckpointFlops) return;
    // Building the model and exporting it with the saved parameters (resume writes model.flow
    // so) may refuse values by the layer and tensor they belong to.
    try {
      const auto model = train::make_train_compute(g, train::Device::Cpu);
      std::vector<float> &p = model->params().values();
      if (p.size() != c.params.size()) return;  // resume refuses this by name
      p = c.params;
      const Graph exported = model->export_graph(p);
      if (exported.dims() != g.dims()) r.problem = "the exported model changed shape";
    } catch (const Error &e) {
      if (e.status() != FLOWRT_FORMAT_ERROR && e.status() != FLOWRT_INVALID_ARGUMENT)
        r.problem = "model from the checkpoint: unexpected status: " + std::string(e.what());
    }
  });
}

}  // namespace flowrt::fuzz
