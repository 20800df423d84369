// Training data: uint8 images already fitted to the model's (C, H, W), with labels, split into
// train and test as each data set defines. Every problem (missing or malformed file) throws
// flowrt::Error naming the file.
//
// Data sets:
// - "fashion-mnist", "mnist": IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte,
//   t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (each optionally .gz). 28x28 grey images are
//   centred and zero-padded to the model's size (32x32 for 3 levels, as Glow does; none at 2).
//   Fashion-MNIST's default directory is /usr/share/datasets/fashion-mnist (Debian package
//   dataset-fashion-mnist); mnist needs --data-dir.
// - "cifar10": the binary version (data_batch_1..5.bin train, test_batch.bin test; records of
//   1 label byte + 3072 bytes of RGB planes), in --data-dir or its cifar-10-batches-bin/.
// - a directory of PNGs: DIR/train/*.png and DIR/test/*.png when both exist, otherwise every
//   tenth image (in name order) is a test image. Images are centre-cropped to the model's aspect
//   ratio and box-filtered to its size; grey and RGB are converted to the model's channels.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "image_io.hpp"
#include "model/graph.hpp"

namespace flowrt::train {

struct Dataset {
  ImageBatch images;            // n x C x H x W of the model
  std::vector<int32_t> labels;  // n entries, or empty when the data set has none
  int64_t size() const { return images.n; }
};

struct DataSplit {
  std::string name;  // for messages and metadata
  Dataset train, test;
};

struct DataRequest {
  std::string data;      // "fashion-mnist", "mnist", "cifar10" or a directory
  std::string data_dir;  // overrides the default directory of a named data set
  int64_t channels = 1, height = 32, width = 32;
  int64_t limit_train = 0, limit_test = 0;  // > 0: at most this many images
  bool need_train = true;
};

DataSplit load_data(const DataRequest &request);

// The model image size a data set implies for a model of `levels` levels: the MNISTs at 28x28
// when 2^levels divides 28 (up to 2 levels), else zero-padded to the next multiple (32x32 for 3
// to 5 levels); CIFAR-10 3x32x32; a PNG folder its first image's channels at 32x32.
ImageSpec default_image(const std::string &data, int levels);

// Per-format readers (idx.cpp, cifar10.cpp, png_folder.cpp).
DataSplit load_idx(const std::string &dir, const DataRequest &request);
DataSplit load_cifar10(const std::string &dir, const DataRequest &request);
DataSplit load_png_folder(const std::string &dir, const DataRequest &request);
int64_t png_folder_channels(const std::string &dir);  // of its first image
// Centre crop to the target aspect ratio, then box filter to (h, w), then channel conversion.
ImageBatch resize_image(const ImageBatch &image, int64_t c, int64_t h, int64_t w);

}  // namespace flowrt::train
