// Drives Debian's chromium through puppeteer-core for tests/tests/browser.rs.
//
// Usage: node run.mjs '<json>' where the JSON has
//   chromium   path of the browser binary
//   server     http://127.0.0.1:<port> of the grasp-server under test
//   params     query parameters for the client page (page.js)
//   pages      extra URLs to open and check (the server's repository page)
//   timeout_ms how long the client page may take
// It bundles page.js with esbuild, serves it from its own 127.0.0.1 port (another origin
// than the server, so CORS is exercised), runs it, and prints one line
// `RESULT <json>` with what the page reported, console errors and failed requests.
// Everything it starts ends with it; the Rust test also kills its process group and the
// browser's (announced as `BROWSER_PID <pid>`).

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { build } from 'esbuild';
import puppeteer from 'puppeteer-core';

const here = dirname(fileURLToPath(import.meta.url));
const options = JSON.parse(process.argv[2]);

const bundle = await build({
  entryPoints: [join(here, 'page.js')],
  bundle: true,
  write: false,
  format: 'iife',
  platform: 'browser',
  logLevel: 'error',
});
const files = {
  '/': ['text/html', readFileSync(join(here, 'index.html'))],
  '/bundle.js': ['text/javascript', bundle.outputFiles[0].contents],
};
const statics = createServer((req, res) => {
  const file = files[new URL(req.url, 'http://x').pathname];
  if (!file) {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, { 'content-type': file[0] }).end(file[1]);
});
await new Promise((resolve) => statics.listen(0, '127.0.0.1', resolve));
const origin = `http://127.0.0.1:${statics.address().port}`;

const profile = mkdtempSync(join(tmpdir(), 'grasp-chromium-'));
const browser = await puppeteer.launch({
  executablePath: options.chromium,
  headless: true,
  pipe: true,
  userDataDir: profile,
  timeout: 60000,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});

// The browser leads a process group of its own; the Rust test kills it with ours.
process.stdout.write(`BROWSER_PID ${browser.process().pid}\n`);

/** Opens `url` in a new tab and records what went wrong on it. */
async function open(url) {
  const page = await browser.newPage();
  const problems = { console_errors: [], page_errors: [], failed_requests: [] };
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.console_errors.push(msg.text());
  });
  page.on('pageerror', (e) => problems.page_errors.push(String(e)));
  page.on('requestfailed', (r) => problems.failed_requests.push(`${r.url()}: ${r.failure()?.errorText}`));
  page.on('response', (r) => {
    if (r.status() >= 400) problems.failed_requests.push(`${r.url()}: HTTP ${r.status()}`);
  });
  const response = await page.goto(url, { waitUntil: 'load', timeout: 30000 });
  return { page, problems, status: response?.status() };
}

const output = { origin, pages: [] };
try {
  const query = new URLSearchParams({ server: options.server, ...options.params });
  const client = await open(`${origin}/?${query}`);
  await client.page.waitForFunction(() => window.__done === true, { timeout: options.timeout_ms });
  output.client = { ...(await client.page.evaluate(() => window.__result)), ...client.problems };
  for (const url of options.pages ?? []) {
    const visited = await open(url);
    const text = await visited.page.evaluate(() => document.body.innerText);
    const links = await visited.page.evaluate(() => Array.from(document.links, (a) => a.href));
    const title = await visited.page.title();
    // Scripts injected through event contents would set this; the page has none of its own.
    const injected = await visited.page.evaluate(() => window.__xss === true);
    output.pages.push({ url, status: visited.status, title, text, links, injected, ...visited.problems });
  }
} catch (e) {
  output.error = String(e?.stack ?? e);
} finally {
  await browser.close().catch(() => {});
  statics.close();
  rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(`RESULT ${JSON.stringify(output)}\n`);
process.exit(0);
