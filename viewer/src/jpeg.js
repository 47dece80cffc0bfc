// Baseline JPEG -> its quantized DCT coefficients and quantization tables, exactly as stored.
// Hand-written because no maintained npm JPEG decoder (jpeg-js, pdf.js's jpg.js) exposes the
// quantized coefficients: they dequantize and run the IDCT internally and hand out pixels only.
// Scope: what a HyperThumbnail is (and enough of the header to say why another JPEG is not):
// one baseline sequential scan, Huffman coding, optional restart markers.

export class JpegError extends Error {}

// ITU-T T.81 figure A.6: the k-th zig-zag coefficient's index in natural (row-major) order.
export const ZIGZAG_TO_NATURAL = Int32Array.from([
  0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
  13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52,
  45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
]);

const SOI = 0xd8, EOI = 0xd9, SOS = 0xda, DQT = 0xdb, DHT = 0xc4, DRI = 0xdd;
const MAX_HEADER_SEGMENTS = 64;

/** Marker segments after SOI up to and including SOS: [{code, start, payload, end}], scanStart. */
export function readSegments(bytes) {
  if (bytes.length === 0) throw new JpegError('empty file');
  if (bytes[0] !== 0xff || bytes[1] !== SOI) throw new JpegError('not a JPEG file (it does not start with the SOI marker FFD8)');
  const segments = [];
  let pos = 2;
  for (;;) {
    if (pos + 4 > bytes.length) throw new JpegError('truncated JPEG: the file ends inside the header');
    if (bytes[pos] !== 0xff) throw new JpegError(`corrupt JPEG: expected a marker at byte ${pos}`);
    const code = bytes[pos + 1];
    if (code === 0xff) { pos += 1; continue; } // fill byte
    if (code === SOI || code === EOI || (code >= 0xd0 && code <= 0xd7) || code <= 0x01) {
      throw new JpegError(`corrupt JPEG: unexpected marker FF${hex(code)} at byte ${pos} before the image data`);
    }
    const length = (bytes[pos + 2] << 8) | bytes[pos + 3];
    const end = pos + 2 + length;
    if (length < 2) throw new JpegError(`corrupt JPEG: bad segment length ${length} at byte ${pos}`);
    if (end > bytes.length) throw new JpegError('truncated JPEG: the file ends inside a header segment');
    segments.push({ code, start: pos, payload: bytes.subarray(pos + 4, end), end });
    if (segments.length > MAX_HEADER_SEGMENTS) throw new JpegError(`too many JPEG header segments (more than ${MAX_HEADER_SEGMENTS})`);
    if (code === SOS) return { segments, scanStart: end };
    pos = end;
  }
}

function hex(code) {
  return code.toString(16).toUpperCase().padStart(2, '0');
}

/** The frame header: {code, precision, width, height, components: [{id, h, v, table}]}. */
export function readFrame(segments) {
  const frames = segments.filter((s) => s.code >= 0xc0 && s.code <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(s.code));
  if (frames.length !== 1) throw new JpegError(`corrupt JPEG: expected one frame header (SOF), found ${frames.length}`);
  const p = frames[0].payload;
  if (p.length < 6 || p.length !== 6 + 3 * p[5]) throw new JpegError('corrupt JPEG: malformed frame header');
  const components = [];
  for (let i = 0; i < p[5]; i++) {
    const at = 6 + 3 * i;
    components.push({ id: p[at], h: p[at + 1] >> 4, v: p[at + 1] & 15, table: p[at + 2] });
  }
  return { code: frames[0].code, precision: p[0], height: (p[1] << 8) | p[2], width: (p[3] << 8) | p[4], components };
}

/** Quantization tables by id, natural order (the file stores them in zig-zag order). */
export function readQuantTables(segments) {
  const tables = new Map();
  for (const s of segments.filter((seg) => seg.code === DQT)) {
    let q = s.payload;
    while (q.length > 0) {
      if (q[0] >> 4 !== 0) throw new JpegError('not a baseline JPEG: 16-bit quantization table');
      if (q.length < 65) throw new JpegError('corrupt JPEG: truncated quantization table');
      const table = new Int32Array(64);
      for (let k = 0; k < 64; k++) table[ZIGZAG_TO_NATURAL[k]] = q[1 + k];
      tables.set(q[0] & 15, table);
      q = q.subarray(65);
    }
  }
  return tables;
}

/** Canonical Huffman table (T.81 annex C / F.2.2.3) as a 16-bit prefix lookup: value and length. */
function buildHuffman(counts, symbols) {
  const lookup = new Int32Array(1 << 16).fill(-1); // (length << 8) | symbol
  let code = 0, k = 0;
  for (let length = 1; length <= 16; length++) {
    for (let i = 0; i < counts[length - 1]; i++) {
      if (k >= symbols.length) throw new JpegError('corrupt JPEG: Huffman table has fewer symbols than codes');
      if (code >= (1 << length)) throw new JpegError('corrupt JPEG: Huffman code lengths overflow');
      const shift = 16 - length, first = code << shift;
      lookup.fill((length << 8) | symbols[k], first, first + (1 << shift));
      code++; k++;
    }
    code <<= 1;
  }
  return lookup;
}

function readHuffmanTables(segments) {
  const dc = new Map(), ac = new Map();
  for (const s of segments.filter((seg) => seg.code === DHT)) {
    let p = s.payload;
    while (p.length > 0) {
      if (p.length < 17) throw new JpegError('corrupt JPEG: truncated Huffman table');
      const counts = p.subarray(1, 17);
      const total = counts.reduce((a, b) => a + b, 0);
      if (p.length < 17 + total) throw new JpegError('corrupt JPEG: truncated Huffman table');
      const table = buildHuffman(counts, p.subarray(17, 17 + total));
      ((p[0] >> 4) === 0 ? dc : ac).set(p[0] & 15, table);
      p = p.subarray(17 + total);
    }
  }
  return { dc, ac };
}

function restartInterval(segments) {
  const dri = segments.filter((s) => s.code === DRI).pop();
  return dri && dri.payload.length >= 2 ? (dri.payload[0] << 8) | dri.payload[1] : 0;
}

/** Bits of the entropy-coded data: removes stuffed zero bytes and stops at markers. */
class BitReader {
  constructor(bytes, pos) {
    this.bytes = bytes; this.pos = pos; this.acc = 0; this.bits = 0; this.marker = -1;
    this.padded = 0; // zero bits appended past the data's end (more of them than `bits` left: read past it)
  }

  fill() { // at least 16 bits in the accumulator (zeros past a marker, as libjpeg pads)
    while (this.bits <= 16) {
      let byte = 0;
      if (this.marker < 0 && this.pos < this.bytes.length) {
        byte = this.bytes[this.pos];
        if (byte === 0xff) {
          const next = this.bytes[this.pos + 1];
          if (next === 0x00) this.pos += 2;
          else { this.marker = next; byte = 0; }
        } else this.pos += 1;
      } else if (this.marker < 0) this.marker = EOI; // ran off the end
      this.acc = ((this.acc << 8) | byte) >>> 0;
      this.bits += 8;
      if (this.marker >= 0) this.padded += 8;
    }
  }

  peek16() { this.fill(); return (this.acc >>> (this.bits - 16)) & 0xffff; }

  skip(n) { this.bits -= n; this.acc &= this.bits >= 32 ? 0xffffffff : (1 << this.bits) - 1; }

  receive(n) { // n <= 16 raw bits
    if (n === 0) return 0;
    this.fill();
    const value = (this.acc >>> (this.bits - n)) & ((1 << n) - 1);
    this.skip(n);
    return value;
  }

  decode(lookup) {
    const entry = lookup[this.peek16()];
    if (entry < 0) throw new JpegError('corrupt JPEG: invalid Huffman code in the image data');
    this.skip(entry >> 8);
    return entry & 0xff;
  }

  restart(expected) { // drop the partial byte, then the RSTn marker must follow
    this.acc = 0; this.bits = 0;
    if (this.marker < 0) {
      while (this.pos < this.bytes.length && this.bytes[this.pos] !== 0xff) this.pos++;
      this.marker = this.bytes[this.pos + 1];
    }
    if (this.marker !== 0xd0 + expected) throw new JpegError(`corrupt JPEG: restart marker RST${expected} missing`);
    this.pos += 2; this.marker = -1; this.padded = 0;
  }
}

function extend(value, size) { // T.81 F.12: a size-bit magnitude category to its signed value
  return value < (1 << (size - 1)) ? value - (1 << size) + 1 : value;
}

/**
 * Entropy-decode the one interleaved scan of a 4:4:4 baseline JPEG whose header checks passed.
 * Returns coefficients Int32Array (components, 64, rows, cols) in natural order, and where the
 * scan's data ended (the offset just past the EOI).
 */
export function decodeScan(bytes, segments, scanStart, frame) {
  const sos = segments[segments.length - 1].payload;
  const ncomp = frame.components.length;
  if (sos[0] !== ncomp || sos.length !== 4 + 2 * ncomp) throw new JpegError('unsupported JPEG scan: expected one scan of all components');
  const { dc, ac } = readHuffmanTables(segments);
  const rows = Math.ceil(frame.height / 8), cols = Math.ceil(frame.width / 8), plane = rows * cols;
  const scan = [];
  for (let i = 0; i < ncomp; i++) {
    const id = sos[1 + 2 * i], sel = sos[2 + 2 * i];
    const index = frame.components.findIndex((c) => c.id === id);
    const dcTable = dc.get(sel >> 4), acTable = ac.get(sel & 15);
    if (index < 0 || !dcTable || !acTable) throw new JpegError('corrupt JPEG: the scan names an undefined component or Huffman table');
    scan.push({ index, dcTable, acTable });
  }
  const coefficients = new Int32Array(ncomp * 64 * plane);
  const predictors = new Int32Array(ncomp);
  const interval = restartInterval(segments);
  const reader = new BitReader(bytes, scanStart);
  let nextRestart = 0;
  for (let mcu = 0; mcu < plane; mcu++) {
    if (interval > 0 && mcu > 0 && mcu % interval === 0) {
      reader.restart(nextRestart);
      nextRestart = (nextRestart + 1) & 7;
      predictors.fill(0);
    }
    for (const { index, dcTable, acTable } of scan) {
      const base = index * 64 * plane + mcu;
      const size = reader.decode(dcTable);
      if (size > 11) throw new JpegError('corrupt JPEG: DC difference out of range');
      predictors[index] += size ? extend(reader.receive(size), size) : 0;
      coefficients[base] = predictors[index];
      for (let k = 1; k < 64;) {
        const rs = reader.decode(acTable), run = rs >> 4, s = rs & 15;
        if (s === 0) {
          if (run !== 15) break; // end of block
          k += 16;
          continue;
        }
        k += run;
        if (k > 63) throw new JpegError('corrupt JPEG: AC coefficient index past the block');
        coefficients[base + ZIGZAG_TO_NATURAL[k] * plane] = extend(reader.receive(s), s);
        k++;
      }
    }
    if (mcu % cols === cols - 1 && reader.padded > reader.bits) {
      throw new JpegError('truncated JPEG: the image data ends before the last block'); // read past its end
    }
  }
  return { coefficients, rows, cols };
}

/** Offset just past the EOI that must follow the scan (a second scan or other marker: refused). */
/** Offset just past the EOI that must end the single scan: the first marker at or after `from`. */
export function scanEnd(bytes, from) {
  let pos = from;
  while (pos + 1 < bytes.length) {
    if (bytes[pos] === 0xff && bytes[pos + 1] !== 0x00 && bytes[pos + 1] !== 0xff && !(bytes[pos + 1] >= 0xd0 && bytes[pos + 1] <= 0xd7)) {
      if (bytes[pos + 1] !== EOI) throw new JpegError(`unsupported JPEG: marker FF${hex(bytes[pos + 1])} after the image data (only a single scan followed by EOI is allowed)`);
      return pos + 2;
    }
    pos++;
  }
  throw new JpegError('truncated JPEG: the image data has no end (EOI marker missing)');
}
