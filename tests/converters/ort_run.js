// Runs an ONNX model once in ONNX Runtime (CPU) for the Python tests.
// Usage: node ort_run.js REQUEST.json
// REQUEST: {"model": path, "threads": n, "out_dir": path,
//           "inputs": {name: {"type": "float32"|"int64", "dims": [...], "file": raw LE path}}}
// Writes out_dir/<output>.bin (raw little-endian) and out_dir/outputs.json ({name: dims}).
'use strict';
const fs = require('fs');
const path = require('path');
const ort = require(require.resolve('onnxruntime-node', { paths: [__dirname] }));

const ARRAYS = { float32: Float32Array, int64: BigInt64Array };

async function main() {
  const req = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const session = await ort.InferenceSession.create(req.model, {
    intraOpNumThreads: req.threads || 1,
    interOpNumThreads: 1,
    executionProviders: ['cpu'],
  });
  const feeds = {};
  for (const [name, spec] of Object.entries(req.inputs)) {
    const bytes = fs.readFileSync(spec.file);
    const Arr = ARRAYS[spec.type];
    const data = new Arr(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
    feeds[name] = new ort.Tensor(spec.type, data, spec.dims);
  }
  const results = await session.run(feeds);
  const shapes = {};
  for (const [name, tensor] of Object.entries(results)) {
    const d = tensor.data;
    fs.writeFileSync(path.join(req.out_dir, name + '.bin'),
                     Buffer.from(d.buffer, d.byteOffset, d.byteLength));
    shapes[name] = tensor.dims;
  }
  fs.writeFileSync(path.join(req.out_dir, 'outputs.json'), JSON.stringify(shapes));
}

main().catch((e) => { console.error(String(e && e.message || e)); process.exit(1); });
