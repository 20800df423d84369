#!/usr/bin/python3
"""Drives the browser demo in headless Chromium and checks it against the native library.

Serves DIR on 127.0.0.1, opens index.html?test=1 through the Chrome DevTools protocol, waits
for the page's #result (16 samples at T = 0.7, seed 1 unless told otherwise), takes a
screenshot, and compares the pixels with what the native libflowrt samples for the same model,
seed and temperature on the backend the page ran (the portable backend with its baseline 4-wide
kernels, the same code as WebAssembly SIMD128's, or the reference backend), and bits/dim of the
samples and of a PNG given to the page. Exit 0 when they are equal, 1 otherwise.

  web_test.py --dir build-wasm/web --library build/lib/libflowrt.so --model M.flow
"""
import argparse
import base64
import ctypes
import functools
import http.server
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zlib

import numpy as np
import websocket


def write_png(path, pixels, c, h, w):
    """An 8-bit gray or RGB PNG of one CHW image, with zlib alone."""
    hwc = pixels.reshape(c, h, w).transpose(1, 2, 0)
    raw = b"".join(b"\0" + hwc[y].tobytes() for y in range(h))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    color = 0 if c == 1 else 2
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def native_run(library, model_path, n, temperature, seed, backend):
    """What the native library samples (uint8, n*C*H*W) for the seed, the bits/dim it gives
    those samples, the image shape and the backend it ran on."""
    lib = ctypes.CDLL(library)
    lib.flowrt_last_error.restype = ctypes.c_char_p
    lib.flowrt_backend_name.restype = ctypes.c_char_p
    lib.flowrt_session_backend.restype = ctypes.c_int

    def check(status, what):
        if status != 0:
            raise RuntimeError(f"{what}: {lib.flowrt_last_error().decode()}")

    model = ctypes.c_void_p()
    check(lib.flowrt_model_open(model_path.encode(), ctypes.byref(model)), "flowrt_model_open")
    options = ctypes.c_void_p()
    check(lib.flowrt_session_options_create(ctypes.byref(options)), "options")
    check(lib.flowrt_session_options_set_backend(options, backend), "set_backend")
    session = ctypes.c_void_p()
    check(lib.flowrt_session_create(model, options, ctypes.byref(session)), "flowrt_session_create")
    dims = ctypes.c_size_t()
    check(lib.flowrt_model_latent_dim(model, ctypes.byref(dims)), "latent_dim")
    pixels = np.zeros(n * dims.value, dtype=np.uint8)
    check(lib.flowrt_sample(session, ctypes.c_size_t(n), ctypes.c_float(temperature),
                            ctypes.c_uint64(seed), pixels.ctypes.data_as(ctypes.c_void_p)),
          "flowrt_sample")
    bpd = np.zeros(n, dtype=np.float64)
    check(lib.flowrt_encode(session, ctypes.c_size_t(n), pixels.ctypes.data_as(ctypes.c_void_p),
                            None, bpd.ctypes.data_as(ctypes.c_void_p)), "flowrt_encode")
    shape = (ctypes.c_int(), ctypes.c_int(), ctypes.c_int())
    check(lib.flowrt_model_image_shape(model, *map(ctypes.byref, shape)), "image_shape")
    name = lib.flowrt_backend_name(lib.flowrt_session_backend(session)).decode()
    lib.flowrt_session_free(session)
    lib.flowrt_session_options_free(options)
    lib.flowrt_model_free(model)
    return pixels, bpd, tuple(v.value for v in shape), name


class Quiet(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".js": "text/javascript"}

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DevTools:
    """The few Chrome DevTools protocol calls the test needs."""

    def __init__(self, url):
        self.ws = websocket.create_connection(url, timeout=120)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def evaluate(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return r["result"].get("value")


def chromium_binary():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("web_test: no chromium found (Debian: apt-get install chromium)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--library", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--screenshot")
    ap.add_argument("--timeout", type=float, default=300)
    args = ap.parse_args()

    # The native side of the comparison: the portable backend with the kernels WebAssembly runs.
    os.environ["FLOWRT_PORTABLE_ISA"] = "baseline"
    library = os.path.abspath(args.library)
    runs = {name: native_run(library, args.model, args.n, args.temperature, args.seed, code)
            for name, code in (("ref", 1), ("portable", 4))}
    _, _, (c, h, w), _ = runs["ref"]
    # The first sample as a PNG, for the page's drop path.
    write_png(os.path.join(args.dir, "test_sample.png"), runs["ref"][0][:c * h * w], c, h, w)

    port = args.port or free_port()
    handler = functools.partial(Quiet, directory=args.dir)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    debug_port = free_port()
    profile = tempfile.mkdtemp(prefix="flowrt-chromium-")
    browser = subprocess.Popen(
        [chromium_binary(), "--headless=new", "--no-sandbox", "--disable-gpu",
         "--disable-dev-shm-usage", "--no-first-run", f"--user-data-dir={profile}",
         f"--remote-debugging-port={debug_port}", "--window-size=900,1000", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{debug_port}/json/list") as r:
                    pages = [t for t in json.load(r) if t.get("type") == "page"]
                if pages:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                sys.exit("web_test: chromium did not start its DevTools endpoint in 60 s")
            time.sleep(0.2)
        tools = DevTools(pages[0]["webSocketDebuggerUrl"])
        tools.call("Page.enable")
        url = (f"http://127.0.0.1:{port}/index.html?test=1&n={args.n}&t={args.temperature}"
               f"&seed={args.seed}&png=test_sample.png")
        start = time.time()
        tools.call("Page.navigate", url=url)
        result = None
        while time.time() - start < args.timeout:
            text = tools.evaluate(
                "(() => { const r = document.getElementById('result');"
                " return r && !r.hidden ? r.textContent : null; })()")
            if text:
                result = json.loads(text)
                break
            time.sleep(0.1)
        wall = time.time() - start
        if result is None:
            status = tools.evaluate("document.getElementById('status').textContent")
            sys.exit(f"web_test: no result after {args.timeout:.0f} s (page says: {status})")
        if "error" in result:
            sys.exit(f"web_test: the page failed: {result['error']}")
        if args.screenshot:
            shot = tools.call("Page.captureScreenshot", format="png")
            with open(args.screenshot, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
        user_agent = tools.evaluate("navigator.userAgent")
    finally:
        browser.terminate()
        browser.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)
        server.shutdown()

    web = np.frombuffer(bytes.fromhex(result["pixels"]), dtype=np.uint8)
    if result["backend"] not in runs:
        print(f"FAIL: the page ran the {result['backend']} backend, not ref or portable")
        return 1
    native, native_bpd, _, native_backend = runs[result["backend"]]
    print(f"browser: {user_agent.split(' ')[-2] if user_agent else '?'}; page loaded, "
          f"sampled and reported in {wall:.2f} s")
    print(f"browser sampling: {result['n']} images {'x'.join(map(str, result['shape']))} at "
          f"T = {result['t']}, seed {result['seed']}: {result['ms']:.0f} ms on the "
          f"{result['backend']} backend (WebAssembly)")
    if web.shape != native.shape:
        print(f"FAIL: the page returned {web.size} pixels, the native library {native.size}")
        return 1
    differ = int(np.count_nonzero(web != native))
    kernels = " (baseline kernels)" if native_backend == "portable" else ""
    print(f"native {native_backend} backend{kernels}: {differ} of {web.size} pixels differ")
    if native_backend != "ref":
        other = int(np.count_nonzero(web != runs["ref"][0]))
        print(f"  (native ref backend, for reference: {other} of {web.size} pixels differ)")
    bpd_error = float(np.max(np.abs(np.array(result["bitsPerDim"]) - native_bpd)))
    png_error = abs(result["png"] - native_bpd[0])
    print(f"bits/dim of the samples: browser vs native max |difference| {bpd_error:.2e} "
          f"({result['encodeMs']:.0f} ms to encode {args.n}); the first sample as a PNG through "
          f"the drop path: {result['png']:.6f} vs {native_bpd[0]:.6f}")
    if args.screenshot:
        print(f"screenshot: {args.screenshot}")
    ok = differ == 0 and bpd_error <= 1e-5 and png_error <= 1e-5
    print("web test: " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
