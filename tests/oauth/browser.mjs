// Drives an OAuth login in headless Chromium (the system /usr/bin/chromium, via playwright-core).
//
//   node tests/oauth/browser.mjs <authorize-url> [--screenshot out.png] [--deny] [--out result.json]
//                                [--login NAME] [--timeout MS]
//
// Opens the URL, answers oidc-provider's development login page (any login/password) and its
// consent page, then waits until the browser has left the authorization server's origin and the
// page it was redirected to (the loopback callback of the program under test) has loaded.
// With --deny it clicks "[ Cancel ]" on the login page instead, so the server redirects with
// error=access_denied.
//
// Result: ONE JSON object, on stdout, or written to --out FILE (then stdout stays empty):
//   {"ok": bool,              true when the browser ended outside the authorization server
//    "url": "...",            final URL (the callback URL with code/state/iss or error=...)
//    "query": {...},          its query parameters (last value of each name)
//    "status": 200|null,      HTTP status of the final document
//    "title": "...", "text": "...",   the final page's title and visible text
//    "steps": ["login", "consent"],   what was answered on the way
//    "screenshot": "out.png"|null, "elapsed_ms": N, "error": null|"..."}
// Exit status: 0 when ok; 2 when the flow stopped on a page of the authorization server
// (e.g. its error page for a bad redirect_uri: the JSON still says what it shows); 1 on a crash
// or timeout (then the JSON has "error").
//
// Environment: PIXSRC_CHROMIUM (default /usr/bin/chromium). Never downloads a browser.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import process from 'node:process';

import { chromium } from 'playwright-core';

const started = Date.now();
const argv = process.argv.slice(2);
const opts = { screenshot: null, deny: false, out: null, login: 'pixsrc-user', timeout: 30000 };
let authorizeUrl = null;
for (let i = 0; i < argv.length; i += 1) {
  const a = argv[i];
  if (a === '--deny') opts.deny = true;
  else if (a === '--screenshot') opts.screenshot = argv[++i];
  else if (a === '--out') opts.out = argv[++i];
  else if (a === '--login') opts.login = argv[++i];
  else if (a === '--timeout') opts.timeout = Number(argv[++i]);
  else if (!a.startsWith('--') && authorizeUrl === null) authorizeUrl = a;
  else {
    process.stderr.write(`browser.mjs: unknown argument ${a}\n`);
    process.exit(64);
  }
}
if (!authorizeUrl) {
  process.stderr.write('usage: node browser.mjs <authorize-url> [--screenshot out.png] [--deny] [--out result.json]\n');
  process.exit(64);
}

const result = {
  ok: false, url: null, query: {}, status: null, title: null, text: null,
  steps: [], screenshot: null, elapsed_ms: null, error: null,
};

function emit(code) {
  result.elapsed_ms = Date.now() - started;
  const json = `${JSON.stringify(result)}\n`;
  if (opts.out) writeFileSync(opts.out, json);
  else process.stdout.write(json);
  process.exitCode = code;
}

const authOrigin = new URL(authorizeUrl).origin;
const profile = mkdtempSync(join(tmpdir(), 'pixsrc-chromium-'));
let context;
let exitCode = 1;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.PIXSRC_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--no-first-run', '--disable-sync', '--disable-quic',
    ],
    timeout: opts.timeout,
  });
  context.setDefaultTimeout(opts.timeout);
  const page = context.pages()[0] ?? await context.newPage();

  let lastDocument = null; // the last main-frame document response (redirects included)
  page.on('response', (response) => {
    const req = response.request();
    if (req.isNavigationRequest() && req.frame() === page.mainFrame()) lastDocument = response;
  });

  const offIssuer = (u) => u.origin !== authOrigin;
  await page.goto(authorizeUrl, { waitUntil: 'load' });

  for (let step = 0; step < 6 && !offIssuer(new URL(page.url())); step += 1) {
    const before = page.url();
    const loginForm = page.locator('form:has(input[name="login"])');
    const consentForm = page.locator('form:has(input[name="prompt"][value="consent"])');
    let action;
    if (await loginForm.count()) {
      result.steps.push(opts.deny ? 'login:cancel' : 'login');
      if (opts.deny) {
        action = () => page.getByText('[ Cancel ]').click();
      } else {
        await loginForm.locator('input[name="login"]').fill(opts.login);
        await loginForm.locator('input[name="password"]').fill('any-password');
        action = () => loginForm.locator('button[type="submit"]').click();
      }
    } else if (await consentForm.count()) {
      result.steps.push(opts.deny ? 'consent:cancel' : 'consent');
      action = opts.deny
        ? () => page.getByText('[ Cancel ]').click()
        : () => consentForm.locator('button[type="submit"]').click();
    } else {
      break; // some other page of the authorization server (an error page): report it
    }
    await Promise.all([
      page.waitForURL((u) => u.href !== before, { waitUntil: 'load' }),
      action(),
    ]);
  }

  const final = new URL(page.url());
  result.ok = offIssuer(final);
  result.url = final.href;
  result.query = Object.fromEntries(final.searchParams);
  result.status = lastDocument ? lastDocument.status() : null;
  result.title = await page.title();
  result.text = await page.locator('body').innerText().catch(() => '');
  if (opts.screenshot) {
    await page.screenshot({ path: opts.screenshot, fullPage: true });
    result.screenshot = opts.screenshot;
  }
  exitCode = result.ok ? 0 : 2;
} catch (err) {
  result.error = String(err?.stack || err);
  exitCode = 1;
} finally {
  await context?.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  emit(exitCode);
}
