// The Web Worker that owns libflowrt (WebAssembly): the page posts requests, the worker answers
// with pixels and bits/dim, so sampling never blocks the page.
/* global importScripts, createFlowrt */
importScripts('flowrt_web.js');

let lib = null;
const ready = createFlowrt().then((m) => {
  lib = m;
});

function check(rc, what) {
  if (rc !== 0) throw new Error(what + ': ' + lib.UTF8ToString(lib._web_error()));
}

// Copies `bytes` into the WebAssembly heap for the duration of f(pointer).
function withHeap(size, f) {
  const p = lib._malloc(Math.max(size, 1));
  if (!p) throw new Error('out of memory: ' + size + ' bytes');
  try {
    return f(p);
  } finally {
    lib._free(p);
  }
}

let shape = null;

const handlers = {
  open({ bytes, maxBatch }) {
    const src = new Uint8Array(bytes);
    withHeap(src.length, (p) => {
      lib.HEAPU8.set(src, p);
      check(lib._web_open(p, src.length, maxBatch || 16), 'opening the model');
    });
    withHeap(16 + 4, (p) => {
      check(lib._web_info(p, p + 16), 'reading the model');
      const s = lib.HEAP32.subarray(p >> 2, (p >> 2) + 4);
      shape = { c: s[0], h: s[1], w: s[2], nBits: s[3] };
      shape.backend = lib.UTF8ToString(lib.HEAP32[(p + 16) >> 2]);
    });
    return { shape };
  },
  sample({ n, temperature, seed }) {
    const size = n * shape.c * shape.h * shape.w;
    return withHeap(size, (p) => {
      const t0 = performance.now();
      check(lib._web_sample(n, temperature, seed >>> 0, p), 'sampling');
      const ms = performance.now() - t0;
      return { pixels: lib.HEAPU8.slice(p, p + size), ms };
    });
  },
  encode({ n, pixels }) {
    const size = n * shape.c * shape.h * shape.w;
    if (pixels.length !== size) throw new Error('expected ' + size + ' pixels, got ' + pixels.length);
    return withHeap(size + 8 + 8 * n, (p) => {
      lib.HEAPU8.set(pixels, p);
      const out = p + size + ((8 - (size % 8)) % 8);
      const t0 = performance.now();
      check(lib._web_encode(n, p, out), 'encoding');
      const ms = performance.now() - t0;
      return { bitsPerDim: Array.from(lib.HEAPF64.subarray(out >> 3, (out >> 3) + n)), ms };
    });
  },
};

self.onmessage = async (e) => {
  const { id, type } = e.data;
  try {
    await ready;
    const result = handlers[type](e.data);
    self.postMessage({ id, ok: true, ...result });
  } catch (err) {
    self.postMessage({ id, ok: false, error: String(err.message || err) });
  }
};
