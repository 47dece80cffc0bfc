// A HyperThumbnail .jpg -> what the decoder graphs need, with the checks of the Python reader
// (hyperthumbnail/codec/thumbnail.py): the APP15 marker (format versions 1 and 2), the CRC, a
// baseline 4:4:4 frame of the size the marker declares, and a model id the shipped graphs serve.
import { JpegError, decodeScan, readFrame, readQuantTables, readSegments, scanEnd } from './jpeg.js';

export class ThumbnailError extends Error {
  /** `stripped`: the JPEG has no marker, so a scale and size from the user could stand in for it. */
  constructor(message, { stripped = false } = {}) {
    super(message);
    this.stripped = stripped;
  }
}

const APP15 = 0xef;
const TAG = new TextEncoder().encode('HYPERTHUMB\0');
const MODEL_ID_BYTES = 8;
// Payload size per format version: tag, version, scale, width u32, height u32, [model id], CRC u32.
const PAYLOAD_BYTES = { 1: 25, 2: 25 + MODEL_ID_BYTES };
export const SUPPORTED_SCALES = [2, 4];

export const MISSING_MARKER = 'This JPEG is not a HyperThumbnail: it has no HYPERTHUMB marker. If it is a HyperThumbnail '
  + 'whose metadata was stripped (jpegtran -copy none, an image optimiser, a CDN), give its scale and original size '
  + 'below; if it is an ordinary photo, make a HyperThumbnail of it first with `hyperthumbnail encode`.';

// libjpeg's standard tables (ITU-T T.81 K.1), natural order: a stripped JPEG with these scaled by a
// quality is re-encoded pixels, not the encoder's coefficients.
const IJG_LUMA = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
  14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
  49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99];
const IJG_CHROMA = [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
  47, 66, 99, 99, 99, 99, 99, 99, ...new Array(32).fill(99)];

function startsWith(bytes, prefix) {
  return bytes.length >= prefix.length && prefix.every((b, i) => bytes[i] === b);
}

function crc32(bytes, seed) {
  return globalThis.CRC32.buf(bytes, seed) >>> 0; // SheetJS crc-32 (vendor/crc32.js), zlib's CRC-32
}

function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** The marker's fields, or null when the JPEG has none. */
export function parseMarker(segments, maxPixels) {
  const ours = segments.filter((s) => s.code === APP15 && startsWith(s.payload, TAG));
  if (ours.length === 0) return null;
  if (ours.length > 1) throw new ThumbnailError('corrupt HyperThumbnail file: more than one HYPERTHUMB marker');
  const { payload } = ours[0];
  if (payload.length < TAG.length + 1) throw new ThumbnailError('corrupt HyperThumbnail marker: no format version');
  const version = payload[TAG.length];
  if (!(version in PAYLOAD_BYTES)) {
    throw new ThumbnailError(`unsupported HyperThumbnail format version ${version} (this viewer reads versions ${Object.keys(PAYLOAD_BYTES).join(', ')})`);
  }
  if (payload.length !== PAYLOAD_BYTES[version]) {
    throw new ThumbnailError(`corrupt HyperThumbnail marker: ${payload.length} bytes, expected ${PAYLOAD_BYTES[version]} for format version ${version}`);
  }
  const view = new DataView(payload.buffer, payload.byteOffset, payload.length);
  const scale = payload[12], width = view.getUint32(13), height = view.getUint32(17);
  const rawId = version >= 2 ? payload.subarray(21, 21 + MODEL_ID_BYTES) : null;
  const modelId = rawId && rawId.some((b) => b !== 0) ? toHex(rawId) : null; // all zero: unknown
  if (!SUPPORTED_SCALES.includes(scale)) throw new ThumbnailError(`corrupt HyperThumbnail marker: scale ${scale} is not one of ${SUPPORTED_SCALES.join(', ')}`);
  if (width < 1 || height < 1) throw new ThumbnailError(`corrupt HyperThumbnail marker: size ${width}x${height}`);
  checkPixels(width, height, maxPixels);
  return { segment: ours[0], version, scale, width, height, modelId, crc: view.getUint32(payload.length - 4) };
}

function checkPixels(width, height, maxPixels) {
  if (width * height > maxPixels) {
    throw new ThumbnailError(`the photo is ${width}x${height} = ${width * height} pixels, more than this viewer's limit of ${maxPixels} pixels`);
  }
}

export function thumbnailSize(width, height, scale) {
  return [Math.ceil(width / scale), Math.ceil(height / scale)];
}

function checkFrame(frame, segments, expected, source) {
  if ([0xc2, 0xc6, 0xca, 0xce].includes(frame.code)) throw new ThumbnailError('this is a progressive JPEG: a HyperThumbnail is always baseline, so it was re-encoded or is an ordinary JPEG');
  if (frame.code !== 0xc0) throw new ThumbnailError(`not a baseline JPEG (frame type SOF${frame.code - 0xc0})`);
  if (frame.precision !== 8) throw new ThumbnailError(`not a baseline JPEG: ${frame.precision}-bit samples`);
  if (frame.components.length !== 3) throw new ThumbnailError(`expected 3 colour components (YCbCr), found ${frame.components.length}`);
  if (frame.components.some((c) => c.h !== 1 || c.v !== 1)) {
    const factors = frame.components.map((c) => `${c.h}x${c.v}`).join(', ');
    throw new ThumbnailError(`chroma subsampling is not 4:4:4 (sampling factors ${factors}): a HyperThumbnail is always 4:4:4, so this JPEG was re-encoded or is an ordinary one`);
  }
  if (frame.width !== expected[0] || frame.height !== expected[1]) {
    throw new ThumbnailError(`JPEG size ${frame.width}x${frame.height} does not match ${source} (expected ${expected[0]}x${expected[1]})`);
  }
  if (frame.components[1].table !== frame.components[2].table) throw new ThumbnailError('Cb and Cr use different quantization tables (must be shared)');
  const defined = readQuantTables(segments);
  const missing = frame.components.filter((c) => !defined.has(c.table));
  if (missing.length) throw new ThumbnailError('corrupt JPEG: a quantization table is used but not defined');
  return defined;
}

function ijgQuality(tables) {
  for (let quality = 1; quality <= 100; quality++) {
    const factor = quality < 50 ? Math.floor(5000 / quality) : 200 - 2 * quality;
    const scaled = (t) => Math.min(255, Math.max(1, Math.floor((t * factor + 50) / 100)));
    if (IJG_LUMA.every((t, i) => scaled(t) === tables[i]) && IJG_CHROMA.every((t, i) => scaled(t) === tables[64 + i])) return quality;
  }
  return null;
}

/**
 * Read a thumbnail: {coefficients Int32Array (3, 64, rows, cols), tables Int32Array (2, 64), rows,
 * cols, scale, width, height (the photo's), modelId, version, thumbWidth, thumbHeight}.
 * `stripped` = {scale, width?, height?} stands in for a missing marker, as `decode --scale --size`.
 * `modelIds`: the ids the shipped decoder serves (a thumbnail made by another encoder is refused);
 * `decoderScale`: the shipped decoder's scale.
 */
export function readThumbnail(bytes, { maxPixels, modelIds = [], stripped = null, decoderScale = null } = {}) {
  let segments, scanStart;
  try {
    ({ segments, scanStart } = readSegments(bytes));
  } catch (err) {
    throw err instanceof JpegError ? new ThumbnailError(err.message) : err;
  }
  const marker = parseMarker(segments, maxPixels);
  let scale, width, height, source;
  if (marker) {
    ({ scale, width, height } = marker);
    source = 'the HyperThumbnail marker';
  } else {
    if (!stripped || !stripped.scale) throw new ThumbnailError(MISSING_MARKER, { stripped: true });
    scale = stripped.scale;
    if (!SUPPORTED_SCALES.includes(scale)) throw new ThumbnailError(`scale ${scale} is not one of ${SUPPORTED_SCALES.join(', ')}`, { stripped: true });
    const frame = safe(() => readFrame(segments));
    [width, height] = stripped.width ? [stripped.width, stripped.height] : [frame.width * scale, frame.height * scale];
    const expected = thumbnailSize(width, height, scale);
    if (expected[0] !== frame.width || expected[1] !== frame.height) {
      throw new ThumbnailError(`size ${width}x${height} at scale ${scale} means a ${expected[0]}x${expected[1]} thumbnail, but this JPEG is ${frame.width}x${frame.height}`, { stripped: true });
    }
    checkPixels(width, height, maxPixels);
    source = 'the scale and size given';
  }
  if (decoderScale !== null && scale !== decoderScale) {
    throw new ThumbnailError(`this is a ${scale}x thumbnail; the decoder shipped with this viewer rebuilds ${decoderScale}x thumbnails`);
  }
  const frame = safe(() => readFrame(segments));
  const quant = safe(() => checkFrame(frame, segments, thumbnailSize(width, height, scale), source));
  // As the CLI: the scan's end (EOI) and the checksum before entropy decoding, so damage reads as damage
  const scanStop = safe(() => scanEnd(bytes, scanStart));
  if (marker) {
    const { payload, end } = marker.segment;
    const crc = crc32(bytes.subarray(end, scanStop), crc32(payload.subarray(0, payload.length - 4)));
    if (crc !== marker.crc) throw new ThumbnailError('checksum mismatch: the thumbnail is corrupt or was modified (re-encoding changes it too)');
    if (marker.modelId && !modelIds.includes(marker.modelId)) { // checked after the CRC: the id is intact
      throw new ThumbnailError(`this thumbnail was made by model ${marker.modelId}, which the decoder shipped with this viewer does not serve (it serves ${modelIds.join(', ') || 'no listed model'}); open it with the decoder of the model that made it`);
    }
  }
  const scan = safe(() => decodeScan(bytes, segments, scanStart, frame));
  const tables = new Int32Array(128);
  tables.set(quant.get(frame.components[0].table), 0);
  tables.set(quant.get(frame.components[1].table), 64);
  if (tables.some((t) => t < 1)) throw new ThumbnailError('corrupt JPEG: quantization table contains 0');
  if (!marker) {
    const quality = ijgQuality(tables);
    if (quality !== null) {
      throw new ThumbnailError(`the quantization tables are libjpeg's standard quality-${quality} tables: this JPEG was re-encoded (or is an ordinary JPEG), so its coefficients are not the encoder's`);
    }
  }
  return {
    coefficients: scan.coefficients, tables, rows: scan.rows, cols: scan.cols, scale, width, height,
    thumbWidth: frame.width, thumbHeight: frame.height, modelId: marker ? marker.modelId : null,
    version: marker ? marker.version : null,
  };
}

function safe(read) {
  try {
    return read();
  } catch (err) {
    throw err instanceof JpegError ? new ThumbnailError(err.message) : err;
  }
}
