"""Times the standard PyTorch Glow (glow_torch.py) on a .flow model, after checking that it
computes what flowrt computes on the same images and noise (bits/dim and decoded samples, through
libflowrt's C API), so the race is fair. Prints one JSON object per case on stdout (and a summary
on stderr); run.sh joins them with flowbench's results.

Tuning (as recommended for CPU inference): eval mode, torch.no_grad (except --op train, which
times Adam training steps), denormals flushed,
torch.set_num_threads(--threads); the caller sets OPENBLAS_NUM_THREADS=1 and the glibc malloc
variables (see run.sh)."""

import argparse
import ctypes
import json
import math
import resource
import statistics
import sys
import time

import numpy as np
import torch

from flow_file import read_flow
from glow_torch import Glow


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Flowrt:
    """The few C API calls the parity check needs."""

    def __init__(self, lib_path, model_path, threads, max_batch, backend):
        lib = ctypes.CDLL(lib_path)
        self.lib = lib
        vp = ctypes.c_void_p
        lib.flowrt_last_error.restype = ctypes.c_char_p
        self.model, self.opts, self.sess = vp(), vp(), vp()
        self._ok(lib.flowrt_model_open(model_path.encode(), ctypes.byref(self.model)))
        self._ok(lib.flowrt_session_options_create(ctypes.byref(self.opts)))
        self._ok(lib.flowrt_session_options_set_backend(self.opts, backend))
        self._ok(lib.flowrt_session_options_set_threads(self.opts, threads))
        self._ok(lib.flowrt_session_options_set_max_batch(self.opts, ctypes.c_size_t(max_batch)))
        self._ok(lib.flowrt_session_create(self.model, self.opts, ctypes.byref(self.sess)))

    def _ok(self, status):
        if status != 0:
            raise RuntimeError("flowrt: " + self.lib.flowrt_last_error().decode())

    def bits_per_dim(self, pixels):
        n = pixels.shape[0]
        out = np.zeros(n, np.float64)
        px = np.ascontiguousarray(pixels, np.uint8)
        self._ok(self.lib.flowrt_encode(self.sess, ctypes.c_size_t(n), px.ctypes.data_as(
            ctypes.c_void_p), None, out.ctypes.data_as(ctypes.c_void_p)))
        return out

    def decode_noise(self, eps, temperature, image_floats):
        n = eps.shape[0]
        x = np.zeros((n, image_floats), np.float32)
        e = np.ascontiguousarray(eps, np.float32)
        self._ok(self.lib.flowrt_decode_noise(
            self.sess, ctypes.c_size_t(n), e.ctypes.data_as(ctypes.c_void_p),
            ctypes.c_float(temperature), None, x.ctypes.data_as(ctypes.c_void_p), None))
        return x


def check_parity(glow, args):
    c, h, w, n_bits = glow.image
    n = 4
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(n, c, h, w), dtype=np.uint8)
    backends = {"auto": 0, "ref": 1, "onednn": 2, "cuda": 3}
    flowrt = Flowrt(args.lib, args.model, args.threads, n, backends[args.flowrt_backend])
    dev = args.device
    bpd_flowrt = flowrt.bits_per_dim(pixels)
    bins = 2 ** n_bits
    x = ((pixels >> (8 - n_bits)).astype(np.float32) + 0.5) / bins - 0.5
    log_p, _ = glow(torch.from_numpy(x).to(dev))
    d = c * h * w
    bpd_torch = n_bits - log_p.double().cpu().numpy() / (d * math.log(2))
    bpd_diff = float(np.max(np.abs(bpd_torch - bpd_flowrt)))
    # The same noise through both decoders: eps in flowrt's latent layout (each level's latent
    # flattened CHW, in order) split into PyTorch's per-block tensors.
    temperature = 0.7
    shapes = glow.latent_shapes(n)
    eps = rng.standard_normal((n, d)).astype(np.float32)
    eps_list, off = [], 0
    for s in shapes:
        k = s[1] * s[2] * s[3]
        eps_list.append(torch.from_numpy(eps[:, off:off + k].reshape(s).copy()).to(dev) *
                        temperature)
        off += k
    x_torch = glow.reverse(eps_list).reshape(n, -1).cpu().numpy()
    x_flowrt = flowrt.decode_noise(eps, temperature, d)
    # A random model's decoder can overflow: both must then overflow at the same elements.
    finite_t, finite_f = np.isfinite(x_torch), np.isfinite(x_flowrt)
    both = finite_t & finite_f
    x_diff = float(np.max(np.abs(x_torch[both] - x_flowrt[both]))) if both.any() else 0.0
    if (finite_t != finite_f).any():
        x_diff = float("inf")
    if not both.all():
        log("note: %d of %d decoded values overflow in both implementations" %
            (int((~both).sum()), both.size))
    log("parity on %d images: bits/dim PyTorch %s vs flowrt %s (max diff %.2e); decoded noise "
        "max diff %.2e" % (n, np.round(bpd_torch, 5), np.round(bpd_flowrt, 5), bpd_diff, x_diff))
    if not (bpd_diff <= 1e-4 and x_diff <= 1e-3):
        log("PARITY FAILED: the two implementations do not compute the same model")
        sys.exit(1)
    return bpd_diff, x_diff


def time_case(fn, warmup, reps, min_time, device):
    if device != "cpu":  # GPU work is asynchronous: a call ends when the device is done
        call = fn

        def fn():
            call()
            torch.cuda.synchronize()
    fn()  # first call
    for _ in range(warmup):
        fn()
    samples, start = [], time.perf_counter()
    while len(samples) < reps or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def train_step_fn(glow, batch, device):
    """One training step as glow-pytorch's train.py takes it (dequantised input, bits/dim loss,
    backward, Adam), plus the global gradient-norm clipping flowtrain applies."""
    c, h, w, n_bits = glow.image
    bins = 2.0 ** n_bits
    dims = c * h * w
    params = [p for p in glow.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4)
    pixels = torch.floor(torch.rand(batch, c, h, w, device=device) * bins)

    def step():
        with torch.enable_grad():
            x = (pixels + torch.rand_like(pixels)) / bins - 0.5
            log_p, _ = glow(x)
            bpd = (n_bits - log_p / (dims * math.log(2.0))).mean()
            opt.zero_grad()
            bpd.backward()
            torch.nn.utils.clip_grad_norm_(params, 50.0)
            opt.step()
    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True)
    ap.add_argument("--lib", required=True, help="path to libflowrt.so (for the parity check)")
    ap.add_argument("--name", default="")
    ap.add_argument("--batch", default="1,16,64")
    ap.add_argument("--op", default="sample,encode")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=1.0)
    ap.add_argument("--gflop", type=float, default=0.0, help="GFLOP per image (from flowbench)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (PyTorch's device)")
    ap.add_argument("--flowrt-backend", default="onednn", choices=["auto", "ref", "onednn", "cuda"],
                    help="libflowrt backend of the parity check")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    glow = Glow(read_flow(args.model)).eval().to(args.device)
    with torch.no_grad():
        bpd_diff, x_diff = check_parity(glow, args)
        c, h, w, n_bits = glow.image
        for op in args.op.split(","):
            for batch in [int(b) for b in args.batch.split(",")]:
                glow.train(op == "train")
                if op == "encode":
                    x = torch.rand(batch, c, h, w, device=args.device) - 0.5
                    fn = lambda: glow(x)  # noqa: E731
                elif op == "train":
                    fn = train_step_fn(glow, batch, args.device)
                elif op == "sample":
                    shapes = glow.latent_shapes(batch)
                    fn = lambda: glow.reverse(  # noqa: E731
                        [torch.randn(s, device=args.device) * 0.7 for s in shapes])
                else:
                    raise SystemExit("unknown op " + op)
                ms = time_case(fn, args.warmup, args.reps, args.min_time, args.device)
                med = statistics.median(ms)
                rec = {"impl": "pytorch", "model": args.name, "op": op, "batch": batch,
                       "median_ms": med, "min_ms": min(ms), "images_per_s": batch / med * 1e3,
                       "gflops": args.gflop * batch / med * 1e3, "samples_ms": ms,
                       "threads": args.threads, "torch": torch.__version__,
                       "device": args.device,
                       "parity_bpd_diff": bpd_diff, "parity_decode_diff": x_diff,
                       "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                       "device_mib": (torch.cuda.max_memory_allocated() / 2**20
                                      if args.device.startswith("cuda") else 0.0)}
                print(json.dumps(rec), flush=True)
                log("pytorch %s %s batch %d: median %.2f ms, %.1f images/s" %
                    (args.name, op, batch, med, batch / med * 1e3))


if __name__ == "__main__":
    main()
