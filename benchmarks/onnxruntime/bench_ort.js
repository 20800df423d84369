// Times one exported flowrt ONNX graph (encoder or decoder) in ONNX Runtime on the CPU.
//
//   node bench_ort.js MODEL.onnx --image CxHxW --batch N [--threads 2] [--iters 30]
//                     [--warmup 3] [--temperature 0.7] [--classes K]
//
// The direction comes from the graph's inputs (x: encoder, eps: decoder). Prints one JSON object:
// median and min milliseconds per run and images per second at the median.
// onnxruntime-node is looked up beside this file, then in tests/converters/node_modules (where
// tests/converters/install_onnxruntime.sh installs it).
'use strict';
const path = require('path');

const ortPath = require.resolve('onnxruntime-node', {
  paths: [__dirname, path.join(__dirname, '..', '..', 'tests', 'converters')],
});
const ort = require(ortPath);

function parseArgs(argv) {
  const opts = { threads: 2, iters: 30, warmup: 3, temperature: 0.7, classes: 0 };
  const rest = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) { rest.push(a); continue; }
    const key = a.slice(2);
    const value = argv[++i];
    if (value === undefined) throw new Error(`${a} needs a value`);
    opts[key] = key === 'image' ? value : Number(value);
  }
  if (rest.length !== 1 || !opts.image || !opts.batch) {
    throw new Error('usage: node bench_ort.js MODEL.onnx --image CxHxW --batch N [--threads T]');
  }
  const dims = opts.image.split('x').map(Number);
  if (dims.length !== 3 || dims.some((d) => !(d > 0))) throw new Error(`bad --image ${opts.image}`);
  for (const k of ['batch', 'threads', 'iters', 'warmup']) {
    if (!Number.isInteger(opts[k]) || opts[k] < (k === 'warmup' ? 0 : 1)) {
      throw new Error(`--${k} must be a positive integer`);
    }
  }
  return { model: rest[0], dims, ...opts };
}

// xorshift32 + Box-Muller: reproducible inputs without dependencies.
function makeRandom(seed) {
  let s = seed >>> 0 || 1;
  const uniform = () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return (s + 0.5) / 4294967296;
  };
  const normal = () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
  return { uniform, normal };
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const session = await ort.InferenceSession.create(o.model, {
    intraOpNumThreads: o.threads,
    interOpNumThreads: 1,
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
  });
  const [c, h, w] = o.dims;
  const d = c * h * w;
  const rnd = makeRandom(12345);
  const feeds = {};
  let direction;
  if (session.inputNames.includes('x')) {
    direction = 'encode';
    const x = new Float32Array(o.batch * d);
    for (let i = 0; i < x.length; i++) x[i] = Math.floor(rnd.uniform() * 256) / 256 - 0.5 + 0.5 / 256;
    feeds.x = new ort.Tensor('float32', x, [o.batch, c, h, w]);
  } else if (session.inputNames.includes('eps')) {
    direction = 'decode';
    const eps = new Float32Array(o.batch * d);
    for (let i = 0; i < eps.length; i++) eps[i] = rnd.normal();
    feeds.eps = new ort.Tensor('float32', eps, [o.batch, d]);
    feeds.temperature = new ort.Tensor('float32', Float32Array.of(o.temperature), []);
  } else {
    throw new Error(`${o.model}: neither an encoder (input x) nor a decoder (input eps)`);
  }
  if (session.inputNames.includes('label')) {
    const classes = o.classes || 1;
    feeds.label = new ort.Tensor('int64', BigInt64Array.from({ length: o.batch },
                                                              (_, i) => BigInt(i % classes)),
                                 [o.batch]);
  }
  for (let i = 0; i < o.warmup; i++) await session.run(feeds);
  const times = [];
  for (let i = 0; i < o.iters; i++) {
    const t0 = process.hrtime.bigint();
    await session.run(feeds);
    times.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  times.sort((a, b) => a - b);
  const mid = times.length >> 1;
  const median = times.length % 2 ? times[mid] : (times[mid - 1] + times[mid]) / 2;
  console.log(JSON.stringify({
    runtime: `onnxruntime-node ${ort.env.versions.node}`,
    model: path.basename(o.model),
    direction,
    batch: o.batch,
    threads: o.threads,
    iters: o.iters,
    median_ms: Number(median.toFixed(4)),
    min_ms: Number(times[0].toFixed(4)),
    images_per_s: Number((o.batch / (median / 1000)).toFixed(2)),
  }));
}

main().catch((e) => { console.error(`bench_ort: ${e && e.message || e}`); process.exit(2); });
