// The page: asks the worker for a grid of samples (temperature slider, seed) and scores dropped
// PNGs. With ?test=1 it samples once with the URL's n, t and seed and writes the pixels into
// #result as JSON, for scripts/web_test.sh.
'use strict';

const params = new URLSearchParams(location.search);
const worker = new Worker('worker.js');
const pending = new Map();
let nextId = 1;
let shape = null;

function call(type, payload = {}, transfer = []) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    worker.postMessage({ id, type, ...payload }, transfer);
  });
}
worker.onmessage = (e) => {
  const p = pending.get(e.data.id);
  pending.delete(e.data.id);
  if (e.data.ok) p.resolve(e.data);
  else p.reject(new Error(e.data.error));
};

const $ = (id) => document.getElementById(id);
const status = (text) => {
  $('status').textContent = text;
};

// Draws n NCHW images (1 or 3 channels) as a square-ish grid, scaled to the canvas.
function drawGrid(pixels, n) {
  const { c, h, w } = shape;
  const cols = Math.ceil(Math.sqrt(n)), rows = Math.ceil(n / cols);
  const img = new ImageData(cols * w, rows * h);
  for (let i = 0; i < n; ++i) {
    const gx = (i % cols) * w, gy = Math.floor(i / cols) * h;
    for (let y = 0; y < h; ++y)
      for (let x = 0; x < w; ++x) {
        const o = 4 * ((gy + y) * cols * w + gx + x);
        for (let k = 0; k < 3; ++k) img.data[o + k] = pixels[((i * c + (c === 3 ? k : 0)) * h + y) * w + x];
        img.data[o + 3] = 255;
      }
  }
  const tmp = new OffscreenCanvas(img.width, img.height);
  tmp.getContext('2d').putImageData(img, 0, 0);
  const ctx = $('grid').getContext('2d');
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, 512, 512);
  const scale = Math.floor(512 / Math.max(img.width, img.height)) || 1;
  ctx.drawImage(tmp, 0, 0, img.width * scale, img.height * scale);
}

async function sample(n, temperature, seed) {
  const r = await call('sample', { n, temperature, seed });
  drawGrid(r.pixels, n);
  status(`${n} samples at T = ${temperature.toFixed(2)}, seed ${seed}: ${r.ms.toFixed(0)} ms ` +
         `(${shape.backend} backend, ${shape.c}x${shape.h}x${shape.w})`);
  return r;
}

// A dropped image resized to the model's size; gray models take the luminance.
async function pixelsOf(file) {
  const bitmap = await createImageBitmap(file);
  const { c, h, w } = shape;
  const canvas = new OffscreenCanvas(w, h);
  const ctx = canvas.getContext('2d');
  ctx.drawImage(bitmap, 0, 0, w, h);
  const rgba = ctx.getImageData(0, 0, w, h).data;
  const px = new Uint8Array(c * h * w);
  for (let p = 0; p < h * w; ++p) {
    if (c === 1) {
      px[p] = Math.round(0.299 * rgba[4 * p] + 0.587 * rgba[4 * p + 1] + 0.114 * rgba[4 * p + 2]);
    } else {
      for (let k = 0; k < 3; ++k) px[k * h * w + p] = rgba[4 * p + k];
    }
  }
  return { px, resized: bitmap.width !== w || bitmap.height !== h, size: `${bitmap.width}x${bitmap.height}` };
}

async function main() {
  const url = params.get('model') || $('model').value;
  $('model').value = url;
  const response = await fetch(url);
  if (!response.ok) throw new Error(`cannot fetch ${url}: HTTP ${response.status}`);
  const bytes = await response.arrayBuffer();
  const opened = await call('open', { bytes, maxBatch: 16 }, [bytes]);
  shape = opened.shape;
  const n = Number(params.get('n') || 16);
  const t = Number(params.get('t') || $('temperature').value);
  const seed = Number(params.get('seed') || $('seed').value);
  $('temperature').value = t;
  $('temperature-value').textContent = t.toFixed(2);
  $('seed').value = seed;
  const r = await sample(n, t, seed);
  if (params.get('test')) {
    // The samples' own bits/dim, and a PNG through the same path as a dropped file.
    const scored = await call('encode', { n, pixels: r.pixels });
    let png = null;
    if (params.get('png')) {
      const blob = await (await fetch(params.get('png'))).blob();
      const { px } = await pixelsOf(blob);
      png = (await call('encode', { n: 1, pixels: px })).bitsPerDim[0];
    }
    const hex = Array.from(r.pixels, (v) => v.toString(16).padStart(2, '0')).join('');
    $('result').textContent = JSON.stringify({ n, t, seed, ms: r.ms, encodeMs: scored.ms,
                                               backend: shape.backend,
                                               shape: [shape.c, shape.h, shape.w], pixels: hex,
                                               bitsPerDim: scored.bitsPerDim, png });
    $('result').hidden = false;
  }
}

$('temperature').oninput = () => {
  $('temperature-value').textContent = Number($('temperature').value).toFixed(2);
};
$('temperature').onchange = $('sample').onclick = () => {
  if (shape) sample(16, Number($('temperature').value), Number($('seed').value)).catch((e) => status(String(e)));
};
$('seed').onchange = $('temperature').onchange;
$('drop').ondragover = (e) => {
  e.preventDefault();
  $('drop').classList.add('over');
};
$('drop').ondragleave = () => $('drop').classList.remove('over');
$('drop').ondrop = async (e) => {
  e.preventDefault();
  $('drop').classList.remove('over');
  try {
    const file = e.dataTransfer.files[0];
    const { px, resized, size } = await pixelsOf(file);
    const r = await call('encode', { n: 1, pixels: px });
    status(`${file.name}${resized ? ` (${size}, resized)` : ''}: ` +
           `${r.bitsPerDim[0].toFixed(4)} bits/dim, ${r.ms.toFixed(0)} ms`);
  } catch (err) {
    status(String(err));
  }
};
main().catch((e) => {
  status(String(e));
  if (params.get('test')) {
    $('result').textContent = JSON.stringify({ error: String(e) });
    $('result').hidden = false;
  }
});
