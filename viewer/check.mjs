// Drive a real headless Chromium through the viewer page (puppeteer-core with the system's
// browser; it never downloads one): open a thumbnail through the file picker (--file) or the
// page's own ?src= (in --url), wait for the restore or the page's message, download the restored
// PNG through the page's link, and print one JSON line with what the page reported.
//   node check.mjs --url URL --chromium PATH --downloads DIR [--file JPG [--drop]] [--timeout S] [--webgpu]
// --drop: the file is dropped on the page (a DataTransfer drop event) instead of picked.
import { parseArgs } from 'node:util';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import puppeteer from 'puppeteer-core';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' }, chromium: { type: 'string', default: '/usr/bin/chromium' },
    downloads: { type: 'string' }, file: { type: 'string' }, timeout: { type: 'string', default: '300' },
    webgpu: { type: 'boolean', default: false }, drop: { type: 'boolean', default: false },
  },
});
const timeoutMs = Number(args.timeout) * 1000;
const report = { page_errors: [] };

function finish(code) {
  process.stdout.write(`${JSON.stringify(report)}\n`);
  process.exit(code);
}

const chromiumArgs = ['--no-sandbox', '--disable-dev-shm-usage', '--no-first-run'];
// WebGPU in headless Chromium needs it asked for; whether an adapter comes back is the page's finding.
if (args.webgpu) chromiumArgs.push('--enable-unsafe-webgpu', '--enable-features=Vulkan');

const browser = await puppeteer.launch({ executablePath: args.chromium, headless: true, args: chromiumArgs, timeout: 60000 });
const watchdog = setTimeout(() => { report.error = `timed out after ${args.timeout} s`; browser.close().finally(() => finish(3)); }, timeoutMs);
try {
  report.browser_version = await browser.version();
  report.user_agent = await browser.userAgent();
  const page = await browser.newPage();
  page.on('pageerror', (err) => report.page_errors.push(String(err.message || err)));
  page.on('console', (msg) => { if (msg.type() === 'error') report.page_errors.push(msg.text()); });
  const cdp = await browser.target().createCDPSession();
  await cdp.send('Browser.setDownloadBehavior', { behavior: 'allow', downloadPath: args.downloads, eventsEnabled: true });
  const downloaded = new Promise((resolve, reject) => {
    cdp.on('Browser.downloadProgress', (event) => {
      if (event.state === 'completed') resolve(event);
      if (event.state === 'canceled') reject(new Error('the download was canceled'));
    });
  });
  const settled = () => ['done', 'error'].includes(window.hyperthumbnail && window.hyperthumbnail.state);
  await page.goto(args.url, { waitUntil: 'load', timeout: timeoutMs });
  if (args.file) {
    await page.waitForFunction(() => window.hyperthumbnail && window.hyperthumbnail.state !== 'loading', { timeout: timeoutMs });
    if (args.drop) {
      const base64 = readFileSync(args.file).toString('base64');
      await page.evaluate((data, name) => {
        const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], name, { type: 'image/jpeg' }));
        document.body.dispatchEvent(new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true }));
      }, base64, args.file.split('/').pop());
    } else {
      await (await page.$('#file')).uploadFile(args.file);
    }
    await page.waitForFunction(() => window.hyperthumbnail.state !== 'ready', { timeout: timeoutMs });
  }
  await page.waitForFunction(settled, { timeout: timeoutMs, polling: 200 });
  Object.assign(report, await page.evaluate(() => ({
    ...window.hyperthumbnail,
    shown_message: document.getElementById('message').hidden ? '' : document.getElementById('message').textContent,
    status_text: document.getElementById('status').textContent,
  })));
  if (report.state === 'done') {
    const before = Date.now();
    await page.click('#download');
    const event = await downloaded;
    report.download_path = join(args.downloads, report.download);
    report.download_ms = Date.now() - before;
    if (!existsSync(report.download_path)) report.download_path = join(args.downloads, event.guid);
  }
  clearTimeout(watchdog);
  await browser.close();
  finish(0);
} catch (err) {
  clearTimeout(watchdog);
  report.error = String(err && err.message ? err.message : err);
  await browser.close().catch(() => {});
  finish(2);
}
