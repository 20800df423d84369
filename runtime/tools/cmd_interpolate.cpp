// `flowrt interpolate`: a PNG strip of frames between two images, decoded from latents that go
// from one image's to the other's.
//
// - By default the frames interpolate linearly in z (flowrt_encode) and decode with
//   flowrt_decode.
// - --slerp or -t T work on the standardised latents eps = (z - mean) / std of every level's prior
//   (flowrt_encode_noise) and decode with flowrt_decode_noise at temperature 1, so that each
//   frame's upper levels condition the priors of the levels below, as in sampling. --slerp
//   interpolates spherically (eps of an image is close to a standard normal vector, whose norm a
//   straight line would shrink mid-way: the middle frames would look like low-temperature
//   samples), otherwise linearly; -t T multiplies the interior frames' eps by T.
// The first and last frames are the two images' own latents, unscaled: they decode to the
// inputs' pixels (exactly, in fp32), which the command checks.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "cli_args.hpp"
#include "commands.hpp"
#include "core/error.hpp"
#include "flowrt.hpp"
#include "image_io.hpp"
#include "tool_common.hpp"

namespace flowrt {
namespace {

// Frame `t` in [0, 1] between a and b (d floats each) into out.
void lerp(const float *a, const float *b, size_t d, double t, float *out) {
  for (size_t i = 0; i < d; ++i) out[i] = static_cast<float>((1 - t) * a[i] + t * b[i]);
}

void slerp(const float *a, const float *b, size_t d, double t, float *out) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < d; ++i) {
    ab += static_cast<double>(a[i]) * b[i];
    aa += static_cast<double>(a[i]) * a[i];
    bb += static_cast<double>(b[i]) * b[i];
  }
  const double cos_omega = aa > 0 && bb > 0 ? std::clamp(ab / std::sqrt(aa * bb), -1.0, 1.0) : 1;
  const double omega = std::acos(cos_omega), sin_omega = std::sin(omega);
  // Nearly parallel (or a zero vector): the arc is a line.
  if (sin_omega < 1e-6) return lerp(a, b, d, t, out);
  const double wa = std::sin((1 - t) * omega) / sin_omega, wb = std::sin(t * omega) / sin_omega;
  for (size_t i = 0; i < d; ++i) out[i] = static_cast<float>(wa * a[i] + wb * b[i]);
}

constexpr const char *kUsage =
    "usage: flowrt interpolate M.flow A.png B.png [--steps 8] [--slerp] [-t T] [--backend B] "
    "-o strip.png";

}  // namespace

int cmd_interpolate(int argc, char **argv) {
  std::set<std::string> options = kSessionOptions;
  options.insert({"--steps", "-t", "-o"});
  CliArgs args(argc, argv, 2, options, {"--slerp"}, {{"--temperature", "-t"}, {"--out", "-o"}});
  if (args.positional().size() != 3) invalid_argument(kUsage);
  const int64_t steps = args.get_int("--steps", 8, 2, 1024);
  const bool spherical = args.has("--slerp");
  const bool in_eps = spherical || args.has("-t");
  const double t = args.get_double("-t", 1.0);
  if (t < 0 || t > 100) invalid_argument("-t: temperature must be in [0, 100]");
  const std::string out = args.require("-o");

  Model model(args.positional()[0]);
  Session session(model, session_options(args, steps));
  const ImageBatch a = load_one_image(args.positional()[1], model, "A");
  const ImageBatch b = load_one_image(args.positional()[2], model, "B");
  const size_t d = model.latent_dim(), px = model.image_size();
  std::vector<uint8_t> ab(a.pixels);
  ab.insert(ab.end(), b.pixels.begin(), b.pixels.end());

  const auto t0 = std::chrono::steady_clock::now();
  std::vector<float> ends;
  if (in_eps) {
    const std::vector<float> x = pixels_to_x(model, 2, ab.data());
    ends = session.encode_noise(2, x.data());
  } else {
    session.encode(2, ab.data(), &ends);
  }
  const size_t n = static_cast<size_t>(steps);
  std::vector<float> frames(n * d);
  for (size_t s = 0; s < n; ++s) {
    float *f = frames.data() + s * d;
    if (s == 0 || s == n - 1) {  // the endpoints exactly as encoded
      std::copy_n(ends.data() + (s == 0 ? 0 : d), d, f);
      continue;
    }
    const double at = static_cast<double>(s) / static_cast<double>(n - 1);
    (spherical ? slerp : lerp)(ends.data(), ends.data() + d, d, at, f);
    if (in_eps && t != 1)
      for (size_t i = 0; i < d; ++i) f[i] = static_cast<float>(f[i] * t);
  }
  ImageBatch strip{static_cast<int64_t>(n), model.channels(), model.height(), model.width(), {}};
  if (in_eps)
    strip.pixels = session.decode_noise(n, frames.data(), 1.0f);
  else
    session.decode(n, frames.data(), nullptr, &strip.pixels);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

  // The endpoints must be the inputs (as the model reads them: the top n_bits bits).
  const std::vector<uint8_t> want = quantised(model, ab.data(), ab.size());
  const size_t diff_a = count_differences(strip.pixels.data(), want.data(), px);
  const size_t diff_b = count_differences(strip.pixels.data() + (n - 1) * px, want.data() + px, px);
  write_strip(out, strip);
  char temp[64] = "";
  if (in_eps && t != 1)
    std::snprintf(temp, sizeof temp, ", interior frames at temperature %.3g", t);
  std::printf("wrote %s: %zu frames, %s in %s%s (%s backend, %.1f ms)\n", out.c_str(), n,
              spherical ? "spherical" : "linear", in_eps ? "eps" : "z", temp,
              flowrt_backend_name(session.backend()), ms);
  if (diff_a || diff_b) {
    std::fprintf(stderr,
                 "flowrt interpolate: warning: the end frames differ from the inputs in %zu and "
                 "%zu of %zu pixels (this backend or precision does not invert exactly)\n",
                 diff_a, diff_b, px);
    return 1;
  }
  std::printf("end frames equal the inputs' pixels\n");
  return 0;
}

}  // namespace flowrt
