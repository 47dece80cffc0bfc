// The page: open a thumbnail (file picker, drop, ?src=URL), show it at once, rebuild the photo on
// this device, then compare, report and offer the PNG. `window.hyperthumbnail` mirrors the state
// for automation (`hyperthumbnail viewer check` reads it). Query parameters: src, backend
// (auto|wasm|webgpu), threads, scale and size=WxH (a stripped thumbnail).
import { chooseBackend, loadDecoder, restore } from './restore.js';
import { ThumbnailError, readThumbnail } from './thumbnail.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const state = (window.hyperthumbnail = { state: 'loading' });
let manifest = null, decoder = null, current = null;

function setStatus(text) { $('status').textContent = text; }

function showMessage(text) {
  $('message').textContent = text;
  $('message').hidden = !text;
}

function fail(err) {
  const message = err instanceof ThumbnailError ? err.message : `Could not restore this file: ${err && err.message ? err.message : err}`;
  $('progress').hidden = true;
  setStatus('');
  showMessage(message);
  $('stripped').hidden = !(err instanceof ThumbnailError && err.stripped);
  Object.assign(state, { state: 'error', message, stripped: Boolean(err && err.stripped) });
}

window.addEventListener('error', (event) => fail(event.error || event.message));
window.addEventListener('unhandledrejection', (event) => fail(event.reason));

function strippedGeometry() {
  const width = Number($('width').value), height = Number($('height').value);
  if (!current || (!current.asked && $('stripped').hidden)) return null;
  return { scale: Number($('scale').value), ...(width && height ? { width, height } : {}) };
}

async function getDecoder() {
  if (decoder) return decoder;
  const choice = await chooseBackend(params.get('backend') || 'auto', Number(params.get('threads')) || 0);
  setStatus(`Loading the decoder (${choice.backend}${choice.backend === 'wasm' ? `, ${choice.threads} thread${choice.threads > 1 ? 's' : ''}` : ''})...`);
  const start = performance.now();
  decoder = await loadDecoder(manifest, document.baseURI, choice);
  Object.assign(decoder, { note: choice.note, loadMs: performance.now() - start });
  return decoder;
}

function facts(rows) {
  $('facts').replaceChildren(...rows.map(([key, value]) => {
    const tr = document.createElement('tr');
    for (const text of [key, value]) tr.appendChild(document.createElement('td')).textContent = text;
    return tr;
  }));
}

function drawBefore(image, thumb) { // the thumbnail upscaled by the browser's bicubic resampler
  const canvas = $('before');
  [canvas.width, canvas.height] = [thumb.width, thumb.height];
  const ctx = canvas.getContext('2d');
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(image, 0, 0, thumb.thumbWidth * thumb.scale, thumb.thumbHeight * thumb.scale);
}

async function restoreCurrent() {
  const { bytes, name, image } = current;
  Object.assign(state, { state: 'working', message: '' });
  showMessage('');
  $('result').hidden = true;
  const readStart = performance.now();
  const thumb = readThumbnail(bytes, { maxPixels: manifest.max_pixels, modelIds: manifest.model_ids, stripped: strippedGeometry(),
    decoderScale: manifest.scale });
  const readMs = performance.now() - readStart; // parsing, CRC, entropy decoding of the coefficients
  $('stripped').hidden = true;
  const dec = await getDecoder();
  setStatus(`Restoring ${thumb.width}x${thumb.height} on this device (${dec.backend})...`);
  $('progress').hidden = false;
  const start = performance.now();
  let progressSteps = 0;
  const rgba = await restore(dec, thumb, (done, total) => { $('progress').value = total ? done / total : 0; progressSteps++; });
  const ms = readMs + performance.now() - start; // the restore: reading the file + the decoder's run
  $('progress').hidden = true;

  const after = $('after');
  [after.width, after.height] = [thumb.width, thumb.height];
  after.getContext('2d').putImageData(new ImageData(rgba, thumb.width, thumb.height), 0, 0);
  drawBefore(await image, thumb);
  const bpp = (8 * bytes.length) / (thumb.width * thumb.height);
  facts([
    ['thumbnail', `${thumb.thumbWidth}x${thumb.thumbHeight}, ${bytes.length.toLocaleString()} bytes`],
    ['restored', `${thumb.width}x${thumb.height} (scale ${thumb.scale})`],
    ['bpp', `${bpp.toFixed(4)} (the whole file over the restored pixels)`],
    ['restore time', `${Math.round(ms)} ms on ${dec.backend}${dec.backend === 'wasm' ? `, ${dec.threads} thread(s)` : ''}`],
    ['decoder load', `${Math.round(dec.loadMs)} ms`],
    ...(dec.adapter ? [['GPU', dec.adapter]] : []),
    ...(dec.note ? [['note', dec.note]] : []),
  ]);
  $('result').hidden = false;
  $('thumbnail-view').hidden = true; // the comparison shows it now
  setStatus('Preparing the PNG download...');
  const pngStart = performance.now();
  const png = await new Promise((resolve) => after.toBlob(resolve, 'image/png'));
  const link = $('download');
  if (link.href) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(png);
  link.download = `${name.replace(/\.[^.]*$/, '')}_restored.png`;
  link.hidden = false;
  setStatus(`Restored in ${(ms / 1000).toFixed(2)} s.`);
  Object.assign(state, {
    state: 'done', ms, read_ms: readMs, load_ms: dec.loadMs, png_ms: performance.now() - pngStart, backend: dec.backend,
    threads: dec.backend === 'wasm' ? dec.threads : null, adapter: dec.adapter, note: dec.note, width: thumb.width, height: thumb.height,
    scale: thumb.scale, bytes: bytes.length, bpp, model_id: thumb.modelId, format_version: thumb.version,
    progress_steps: progressSteps, download: link.download, cross_origin_isolated: globalThis.crossOriginIsolated === true,
  });
}

async function open(bytes, name) {
  const url = URL.createObjectURL(new Blob([bytes], { type: 'image/jpeg' }));
  const img = $('thumbnail');
  const image = new Promise((resolve, reject) => {
    img.onload = () => resolve(img);
    img.onerror = () => reject(new ThumbnailError('the browser cannot display this file as a JPEG'));
  });
  image.catch(() => {}); // reported where it is awaited
  img.src = url;
  $('thumbnail-view').hidden = false;
  current = { bytes, name, image, asked: params.has('scale') };
  await restoreCurrent();
}

async function openUrl(src) {
  setStatus(`Fetching ${src}...`);
  const response = await fetch(src);
  if (!response.ok) throw new Error(`fetching ${src} failed: HTTP ${response.status}`);
  await open(new Uint8Array(await response.arrayBuffer()), decodeURIComponent(new URL(src, location.href).pathname.split('/').pop() || 'thumbnail.jpg'));
}

function wireInputs() {
  const run = (task) => task.catch(fail);
  $('file').addEventListener('change', () => {
    const file = $('file').files[0];
    if (file) run(file.arrayBuffer().then((buffer) => open(new Uint8Array(buffer), file.name)));
  });
  document.addEventListener('dragover', (event) => { event.preventDefault(); document.body.classList.add('dragging'); });
  document.addEventListener('dragleave', () => document.body.classList.remove('dragging'));
  document.addEventListener('drop', (event) => {
    event.preventDefault();
    document.body.classList.remove('dragging');
    const file = event.dataTransfer.files[0];
    if (file) run(file.arrayBuffer().then((buffer) => open(new Uint8Array(buffer), file.name)));
  });
  $('retry').addEventListener('click', () => { if (current) { current.asked = true; run(restoreCurrent()); } });
  $('slider').addEventListener('input', () => {
    $('after').style.clipPath = `inset(0 0 0 ${$('slider').value}%)`;
    $('divider').style.left = `${$('slider').value}%`;
  });
}

async function main() {
  wireInputs();
  if (params.has('scale')) $('scale').value = params.get('scale');
  const size = /^(\d+)x(\d+)$/.exec(params.get('size') || '');
  if (size) [$('width').value, $('height').value] = [size[1], size[2]];
  const response = await fetch('manifest.json');
  if (!response.ok) throw new Error(`manifest.json: HTTP ${response.status} (is this the built viewer folder?)`);
  manifest = await response.json();
  Object.assign(state, { state: 'ready', ort_version: manifest.onnxruntime_web });
  setStatus('Ready: open a HyperThumbnail .jpg.');
  if (params.get('src')) await openUrl(params.get('src'));
}

main().catch(fail);
