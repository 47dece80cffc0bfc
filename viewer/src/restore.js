// Quantized coefficients + tables -> the full photo, with the CLI's two decoder graphs and tiling
// (hyperthumbnail/runtime/tiling.py `decode_tiled`): decoder_features at block resolution (tiled
// above the manifest's feature_tile_blocks), then decoder_body in tiles of at most tile_pixels
// HR pixels; each tile computes a receptive-field margin and keeps only its core, so the result
// does not depend on the cut.
//
// ONNX Runtime Web comes in two builds: WASM only (ort.wasm.min.mjs, a 14 MB .wasm) and WASM +
// WebGPU (ort.min.mjs, a 28 MB .wasm); the page loads the one its backend needs.
import { planTiles } from './tiling.js';

/** Which backend and thread count this page can use: {backend, threads, note, adapter}. */
export async function chooseBackend(requested, requestedThreads) {
  const isolated = globalThis.crossOriginIsolated === true; // SharedArrayBuffer: WASM threads
  const cores = navigator.hardwareConcurrency || 1;
  const threads = isolated ? Math.max(1, Math.min(requestedThreads || cores, cores)) : 1;
  const note = isolated ? '' : 'single-threaded: the page is not cross-origin isolated (no COOP/COEP headers)';
  if (requested === 'wasm') return { backend: 'wasm', threads, note, adapter: null };
  const gpu = await webgpuAdapter();
  // A software adapter (SwiftShader: Vulkan emulated on the CPU) is far slower than WASM on the
  // same CPU, so `auto` takes WebGPU only from a real GPU; `webgpu` takes any adapter.
  const usable = gpu.adapter && (requested === 'webgpu' || !gpu.software);
  if (usable) return { backend: 'webgpu', threads, note, adapter: gpu.adapter };
  const reason = gpu.reason || `the only adapter is a software one (${gpu.adapter})`;
  if (requested === 'webgpu') throw new Error(`WebGPU is unavailable: ${reason}`);
  return { backend: 'wasm', threads, note: [note, `WebGPU not used: ${reason}`].filter(Boolean).join('; '), adapter: null };
}

/** {adapter: description or null, software, reason: why there is none}. */
export async function webgpuAdapter() {
  if (!globalThis.isSecureContext) return { adapter: null, reason: 'not a secure context (https or localhost needed)' };
  if (!navigator.gpu) return { adapter: null, reason: 'navigator.gpu is missing (this browser has WebGPU off or none)' };
  try {
    const adapter = await navigator.gpu.requestAdapter();
    if (!adapter) return { adapter: null, reason: 'requestAdapter() returned no adapter (no usable GPU)' };
    const info = adapter.info || {};
    const text = [info.vendor, info.architecture, info.description].filter(Boolean).join(' ') || 'unnamed adapter';
    const software = Boolean(info.isFallbackAdapter || adapter.isFallbackAdapter) || /swiftshader|llvmpipe|software/i.test(text);
    return { adapter: text, software, reason: null };
  } catch (err) {
    return { adapter: null, reason: `requestAdapter() failed: ${err.message}` };
  }
}

let ort = null; // the ONNX Runtime Web module loadDecoder imported

/** The two graphs as ONNX Runtime Web sessions. */
export async function loadDecoder(manifest, baseUrl, { backend, threads, adapter }) {
  ort = await import(backend === 'webgpu' ? '../ort/ort.min.mjs' : '../ort/ort.wasm.min.mjs');
  ort.env.wasm.wasmPaths = new URL('ort/', baseUrl).href;
  ort.env.wasm.numThreads = threads;
  ort.env.logLevel = 'error'; // not its notes on which nodes run on the CPU under WebGPU
  const options = { executionProviders: [backend], graphOptimizationLevel: 'all' };
  const load = (name) => ort.InferenceSession.create(new URL(manifest.graphs[name], baseUrl).href, options);
  const [features, body] = [await load('decoder_features'), await load('decoder_body')];
  return { features, body, manifest, backend, threads, adapter };
}

function cropCoefficients(thumb, [[r0, r1], [c0, c1]]) {
  const { coefficients, rows, cols } = thumb, h = r1 - r0, w = c1 - c0;
  const planes = 3 * 64; // Y, Cb, Cr x 64 frequencies
  const out = new Int32Array(planes * h * w);
  for (let plane = 0; plane < planes; plane++) {
    for (let r = 0; r < h; r++) {
      const from = (plane * rows + r0 + r) * cols + c0;
      out.set(coefficients.subarray(from, from + w), (plane * h + r) * w);
    }
  }
  return new ort.Tensor('int32', out, [1, 3, 64, h, w]);
}

function cropFeatures(features, channels, height, width, [[r0, r1], [c0, c1]]) {
  const y0 = r0 * 8, h = (r1 - r0) * 8, x0 = c0 * 8, w = (c1 - c0) * 8;
  const out = new Float32Array(channels * h * w);
  for (let ch = 0; ch < channels; ch++) {
    for (let y = 0; y < h; y++) {
      const from = (ch * height + y0 + y) * width + x0;
      out.set(features.subarray(from, from + w), (ch * h + y) * w);
    }
  }
  return new ort.Tensor('float32', out, [1, channels, h, w]);
}

// Yield to the event loop between tiles so the page can repaint the progress bar (not
// requestAnimationFrame: it pauses in a background tab, which would stall the restore).
const nextFrame = () => new Promise((resolve) => setTimeout(resolve, 0));

/**
 * Rebuild the photo: RGBA pixels (width x height x 4) of exactly the original size.
 * `onProgress(done, total)` counts the graphs' work in multiply-adds.
 */
export async function restore(decoder, thumb, onProgress = () => {}) {
  const { rows, cols, scale, width, height } = thumb;
  const { margins, feature_tile_blocks: featureTileBlocks, tile_pixels: tilePixels } = decoder.manifest.tiling;
  const unit = 8 * scale; // HR pixels per block side
  const featureTiles = planTiles(rows, cols, margins.decoder_features, featureTileBlocks);
  const bodyTiles = planTiles(rows, cols, margins.decoder_body, Math.max(1, Math.floor(tilePixels / (unit * unit))));
  const area = ([[r0, r1], [c0, c1]]) => (r1 - r0) * (c1 - c0);
  // Progress in multiply-adds: the build counts each graph's per block (export/macs.py).
  const { decoder_features: featureMacs, decoder_body: bodyMacs } = decoder.manifest.macs_per_block;
  const total = featureMacs * featureTiles.reduce((s, t) => s + area(t.extent), 0)
    + bodyMacs * bodyTiles.reduce((s, t) => s + area(t.extent), 0);
  let done = 0;
  onProgress(done, total);
  const tables = new ort.Tensor('int32', thumb.tables, [1, 2, 64]);

  let features = null, channels = 0;
  const fh = rows * 8, fw = cols * 8;
  for (const tile of featureTiles) {
    await nextFrame();
    const out = (await decoder.features.run({ quantized: cropCoefficients(thumb, tile.extent), tables })).features;
    channels = out.dims[1];
    features ??= new Float32Array(channels * fh * fw);
    const [[er0], [ec0]] = tile.extent, [[cr0, cr1], [cc0, cc1]] = tile.core;
    const th = out.dims[2], tw = out.dims[3], data = out.data;
    for (let ch = 0; ch < channels; ch++) {
      for (let y = cr0 * 8; y < cr1 * 8; y++) {
        const from = (ch * th + y - er0 * 8) * tw + (cc0 - ec0) * 8;
        features.set(data.subarray(from, from + (cc1 - cc0) * 8), (ch * fh + y) * fw + cc0 * 8);
      }
    }
    out.dispose();
    done += featureMacs * area(tile.extent);
    onProgress(done, total);
  }

  const rgba = new Uint8ClampedArray(width * height * 4);
  for (const tile of bodyTiles) {
    await nextFrame();
    const out = (await decoder.body.run({ features: cropFeatures(features, channels, fh, fw, tile.extent) })).image;
    const tw = out.dims[2], data = out.data; // (1, H', W', 3) uint8
    const [[er0], [ec0]] = tile.extent, [[cr0, cr1], [cc0, cc1]] = tile.core;
    const yEnd = Math.min(cr1 * unit, height), xEnd = Math.min(cc1 * unit, width); // crop the padding
    for (let y = cr0 * unit; y < yEnd; y++) {
      let from = ((y - er0 * unit) * tw + (cc0 - ec0) * unit) * 3, to = (y * width + cc0 * unit) * 4;
      for (let x = cc0 * unit; x < xEnd; x++, from += 3, to += 4) {
        rgba[to] = data[from]; rgba[to + 1] = data[from + 1]; rgba[to + 2] = data[from + 2]; rgba[to + 3] = 255;
      }
    }
    out.dispose();
    done += bodyMacs * area(tile.extent);
    onProgress(done, total);
  }
  return rgba;
}
