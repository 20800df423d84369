// `flowtrain eval`: test bits/dim of a .flow model with the trainer's forward pass (the number
// training reports), on the data set's full test set unless --limit-test: at the bin centres,
// and with --dequantize K also averaged over K uniform-dequantisation draws per image.
#include <chrono>
#include <cstdio>

#include "cli_args.hpp"
#include "core/error.hpp"
#include "format/flow_file.hpp"
#include "trainer/datasets/dataset.hpp"
#include "trainer/tools/train_commands.hpp"
#include "trainer/train/evaluate.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace flowrt::train {

int cmd_eval(int argc, char **argv) {
  CliArgs a(argc, argv, 2,
            {"--data", "--data-dir", "--limit-test", "--batch", "--threads", "--device",
             "--dequantize", "--seed"},
            {});
  if (a.positional().size() != 1) invalid_argument("usage: flowtrain eval M.flow [--data D]");
  const int threads = static_cast<int>(a.get_int("--threads", 0, 0, 4096));
#ifdef _OPENMP
  if (threads > 0) omp_set_num_threads(threads);
#endif
  const Graph g = read_flow(map_model_file(a.positional()[0]));
  DataRequest r;
  r.data = a.get("--data", "fashion-mnist");
  r.data_dir = a.get("--data-dir");
  r.channels = g.image.channels, r.height = g.image.height, r.width = g.image.width;
  r.limit_test = a.get_int("--limit-test", 0, 0, int64_t{1} << 40);
  r.need_train = false;
  const DataSplit data = load_data(r);
  std::unique_ptr<TrainCompute<float>> model =
      make_train_compute(g, parse_device(a.get("--device", "cpu")));
  const auto t0 = std::chrono::steady_clock::now();
  const double bpd =
      evaluate_bits_per_dim(*model, data.test, g.image.n_bits, a.get_int("--batch", 32, 1, 65536));
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%s: %lld test images of %s: %.6f bits/dim at the bin centres (%.1f images/s)\n",
              a.positional()[0].c_str(), (long long)data.test.size(), data.name.c_str(), bpd,
              data.test.size() / s);
  const int draws = static_cast<int>(a.get_int("--dequantize", 0, 0, 1000));
  if (draws > 0) {
    const double deq =
        evaluate_bits_per_dim(*model, data.test, g.image.n_bits, a.get_int("--batch", 32, 1, 65536),
                              0, draws, a.get_u64("--seed", 0));
    std::printf("%s: %.6f bits/dim with uniform dequantisation (%d draws per image)\n",
                a.positional()[0].c_str(), deq, draws);
  }
  return 0;
}

}  // namespace flowrt::train
