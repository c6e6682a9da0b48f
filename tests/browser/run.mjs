// Relays WebRTC data channels through a TURN server in Debian's headless Chromium,
// and prints one JSON result line on stdout. Run by tests/browser.rs:
//
//   node tests/browser/run.mjs --url turn:127.0.0.1:3478?transport=udp \
//       --username U --credential C [--url ...] [--ignore-certificate-errors] \
//       [--messages 100] [--connect-timeout-ms 20000] [--exchange-timeout-ms 20000]
//
// It serves page.html from a tiny HTTP server on 127.0.0.1, starts Chromium itself
// (so that --disable-features is exactly ours: Playwright's own launch would replace
// it) with --remote-debugging-port=0 and a fresh user-data-dir, reads the DevTools
// port from DevToolsActivePort, connects playwright-core over CDP, and runs the
// page's relayTest(). Chromium is started in its own process group and that group is
// killed on every way out; the temporary directories are removed.
//
// Network: the host-resolver-rules map every name but 127.0.0.1 and localhost to
// "not found", and the background-networking flags keep Chromium from calling home:
// nothing leaves loopback.
//
// Exit status: 0 when a result line was printed (whatever it says: the Rust test
// judges it), 2 on bad arguments, 1 when the harness itself failed (still with a
// JSON line carrying "harnessError").

import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, existsSync, openSync, closeSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));

function parseArgs(argv) {
  const o = {
    urls: [], username: undefined, credential: undefined, ignoreCertErrors: false,
    messages: 100, connectTimeoutMs: 20000, exchangeTimeoutMs: 20000,
    chromium: process.env.CHROMIUM || '/usr/bin/chromium',
  };
  for (let i = 0; i < argv.length; i += 1) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      i += 1;
      return argv[i];
    };
    const num = () => {
      const v = Number(val());
      if (!Number.isInteger(v) || v <= 0) throw new Error(`${a} needs a positive whole number`);
      return v;
    };
    switch (a) {
      case '--url': o.urls.push(val()); break;
      case '--username': o.username = val(); break;
      case '--credential': o.credential = val(); break;
      case '--ignore-certificate-errors': o.ignoreCertErrors = true; break;
      case '--messages': o.messages = num(); break;
      case '--connect-timeout-ms': o.connectTimeoutMs = num(); break;
      case '--exchange-timeout-ms': o.exchangeTimeoutMs = num(); break;
      case '--chromium': o.chromium = val(); break;
      default: throw new Error(`unknown argument ${a}`);
    }
  }
  if (o.urls.length === 0) throw new Error('at least one --url is needed');
  return o;
}

let opts;
try {
  opts = parseArgs(process.argv.slice(2));
} catch (e) {
  console.error(`run.mjs: ${e.message}`);
  process.exit(2);
}

const cleanups = [];
let chromiumPid = null;
let chromiumProcess = null;

// Kills Chromium's process group (ours: started detached) synchronously, so that it
// also happens from an 'exit' handler.
function killChromium(signal) {
  if (chromiumPid === null) return;
  try { process.kill(-chromiumPid, signal); } catch { /* already gone */ }
}
process.on('exit', () => { killChromium('SIGKILL'); });
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    killChromium('SIGKILL');
    for (const c of cleanups.reverse()) { try { c(); } catch { /* best effort */ } }
    process.exit(130);
  });
}

function serve() {
  const html = readFileSync(join(here, 'page.html'));
  const server = createServer((req, res) => {
    if (req.url === '/' || req.url === '/page.html') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      res.end(html);
    } else if (req.url === '/favicon.ico') {
      res.writeHead(204);
      res.end();
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function startChromium(profile, logPath) {
  if (!existsSync(opts.chromium)) {
    throw new Error(`${opts.chromium} not found: install Debian's chromium package (scripts/test.sh does)`);
  }
  const args = [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    `--user-data-dir=${profile}`,
    '--remote-debugging-address=127.0.0.1',
    '--remote-debugging-port=0',
    '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost',
    '--disable-features=WebRtcHideLocalIpsWithMdns,MediaRouter,OptimizationHints,NetworkTimeServiceQuerying,Translate,AutofillServerCommunication',
  ];
  if (opts.ignoreCertErrors) args.push('--ignore-certificate-errors');
  args.push('about:blank');
  const log = openSync(logPath, 'w');
  const child = spawn(opts.chromium, args, { detached: true, stdio: ['ignore', log, log] });
  closeSync(log);
  chromiumPid = child.pid;
  chromiumProcess = child;
  let exited = null;
  child.on('exit', (code, signal) => { exited = { code, signal }; });
  const portFile = join(profile, 'DevToolsActivePort');
  const deadline = Date.now() + 20000;
  while (Date.now() < deadline) {
    if (exited) throw new Error(`chromium exited at start (${JSON.stringify(exited)})`);
    if (existsSync(portFile)) {
      const [port] = readFileSync(portFile, 'utf8').split('\n');
      if (/^\d+$/.test(port)) return { child, port: Number(port) };
    }
    await sleep(50);
  }
  throw new Error('chromium did not write DevToolsActivePort within 20 s');
}

function logTail(path, lines = 30) {
  try {
    // Without a D-Bus (none in CI) Chromium logs many harmless D-Bus errors: left out.
    return readFileSync(path, 'utf8').split('\n')
      .filter((l) => l && !l.includes(':ERROR:dbus/')).slice(-lines);
  } catch {
    return [];
  }
}

async function main() {
  const started = Date.now();
  const work = mkdtempSync(join(tmpdir(), 'ferroturn-browser-'));
  cleanups.push(() => rmSync(work, { recursive: true, force: true }));
  const profile = join(work, 'profile');
  const logPath = join(work, 'chromium.log');
  let server;
  let browser;
  let result;
  try {
    server = await serve();
    const pagePort = server.address().port;
    const { child, port } = await startChromium(profile, logPath);
    const launchedMs = Date.now() - started;
    browser = await chromium.connectOverCDP(`http://127.0.0.1:${port}`, { timeout: 15000 });
    const context = browser.contexts()[0] || await browser.newContext();
    const page = await context.newPage();
    const consoleLines = [];
    page.on('console', (m) => { if (consoleLines.length < 50) consoleLines.push(m.text()); });
    await page.goto(`http://127.0.0.1:${pagePort}/page.html`, { timeout: 15000 });
    const iceServer = { urls: opts.urls };
    if (opts.username !== undefined) iceServer.username = opts.username;
    if (opts.credential !== undefined) iceServer.credential = opts.credential;
    const pageResult = await page.evaluate((cfg) => window.relayTest(cfg), {
      iceServers: [iceServer],
      messages: opts.messages,
      connectTimeoutMs: opts.connectTimeoutMs,
      exchangeTimeoutMs: opts.exchangeTimeoutMs,
    });
    result = {
      ...pageResult,
      urls: opts.urls,
      browserVersion: browser.version(),
      chromiumPid: child.pid,
      launchMs: launchedMs,
      wallMs: Date.now() - started,
    };
    if (consoleLines.length) result.console = consoleLines;
    if (!result.connected || result.failure) result.chromiumLog = logTail(logPath);
  } catch (e) {
    result = { harnessError: String(e && e.stack ? e.stack : e), chromiumLog: logTail(logPath), wallMs: Date.now() - started };
  } finally {
    if (browser) await browser.close().catch(() => {});
    // Ask Chromium to stop, then make sure: the whole group, by our own child's pid.
    if (chromiumProcess && chromiumProcess.exitCode === null && chromiumProcess.signalCode === null) {
      const exited = new Promise((r) => chromiumProcess.once('exit', r));
      killChromium('SIGTERM');
      await Promise.race([exited, sleep(3000)]);
    }
    killChromium('SIGKILL'); // whatever of the group is left
    chromiumPid = null;
    if (server) await new Promise((r) => server.close(r));
    for (const c of cleanups.reverse()) { try { c(); } catch { /* best effort */ } }
    cleanups.length = 0;
  }
  process.stdout.write(`${JSON.stringify(result)}\n`);
  return result.harnessError ? 1 : 0;
}

main().then((code) => process.exit(code), (e) => {
  process.stdout.write(`${JSON.stringify({ harnessError: String(e && e.stack ? e.stack : e) })}\n`);
  process.exit(1);
});
