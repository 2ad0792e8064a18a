// The console, used as a person would: headless Chromium (Debian's) driven by Playwright,
// presenting a client certificate to a real maasd. Started by tests/console.rs, which
// prepares the batches and passes them in the environment; exits non-zero on the first
// failed check, naming it. Screenshots go to MAAS_SHOTS.
import { createRequire } from 'node:module';
import assert from 'node:assert/strict';

const env = (name) => {
  const v = process.env[name];
  if (!v) { throw new Error(`${name} is not set (tests/console.rs sets it)`); }
  return v;
};
const require = createRequire(env('MAAS_PLAYWRIGHT') + '/');
const { chromium } = require('playwright-core');

const base = env('MAAS_URL');
const certs = env('MAAS_CERTS');
const shots = env('MAAS_SHOTS');
const failedBatch = env('MAAS_BATCH_FAILED');
const liveBatch = env('MAAS_BATCH_LIVE');
const heldBatch = env('MAAS_BATCH_HELD');

const browser = await chromium.launch({
  executablePath: process.env.MAAS_CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});

// A browser context that presents USER's client certificate to maasd.
async function as(user) {
  const context = await browser.newContext({
    viewport: { width: 1280, height: 900 },
    clientCertificates: [{ origin: base, certPath: `${certs}/${user}.pem`, keyPath: `${certs}/${user}-key.pem` }],
  });
  const page = await context.newPage();
  page.on('pageerror', (e) => { throw new Error(`script error on ${page.url()}: ${e}`); });
  // The console's Content-Security-Policy allows nothing inline: Chromium reports what it
  // refused on the console, and every page is checked for such reports.
  page.refused = [];
  page.on('console', (m) => {
    if (m.type() === 'error' && /Content Security Policy/.test(m.text())) { page.refused.push(m.text()); }
  });
  return page;
}

async function check(name, f) {
  try {
    await f();
    console.log(`ok   ${name}`);
  } catch (e) {
    console.log(`FAIL ${name}: ${e.stack || e}`);
    await browser.close();
    process.exit(1);
  }
}

// Accessibility basics every page must meet: a main landmark and a skip link, labelled
// form controls, tables with captions and header cells, charts with a title and a table.
async function accessible(page) {
  const report = await page.evaluate(() => {
    const problems = [];
    if (!document.querySelector('main#main')) { problems.push('no main landmark'); }
    if (!document.querySelector('a.skip[href="#main"]')) { problems.push('no skip link'); }
    for (const c of document.querySelectorAll('input, select')) {
      if (!c.closest('label') && !c.getAttribute('aria-label')) { problems.push(`unlabelled ${c.outerHTML}`); }
    }
    for (const t of document.querySelectorAll('table')) {
      if (!t.querySelector('caption')) { problems.push('a table without a caption'); }
      if (!t.querySelector('th')) { problems.push('a table without header cells'); }
    }
    for (const s of document.querySelectorAll('svg')) {
      if (s.getAttribute('role') !== 'img' || !s.querySelector('title')) { problems.push('a chart without role=img and a title'); }
      if (!s.closest('.chart-row')?.querySelector('table')) { problems.push('a chart without a table of its figures'); }
    }
    for (const e of document.querySelectorAll('[tabindex]')) {
      if (Number(e.getAttribute('tabindex')) > 0) { problems.push(`positive tabindex on ${e.tagName}`); }
    }
    for (const e of document.querySelectorAll('[onclick]')) { problems.push(`onclick on ${e.tagName}`); }
    return problems;
  });
  assert.deepEqual(report, [], `accessibility problems on ${page.url()}`);
  assert.deepEqual(page.refused, [], `the Content-Security-Policy refused something on ${page.url()}`);
}

// Presses Tab until the focused element matches SELECTOR (at most 60 times).
async function tabTo(page, selector) {
  for (let i = 0; i < 60; i++) {
    await page.keyboard.press('Tab');
    if (await page.evaluate((s) => document.activeElement?.matches(s), selector)) { return; }
  }
  throw new Error(`Tab never reached ${selector}`);
}

const alice = await as('alice');

await check('the batch list shows a submitted batch moving to done, without a reload', async () => {
  const response = await alice.goto(`${base}/ui/`);
  // No other site may frame the console (a hidden click would be the viewer's).
  const headers = response.headers();
  assert.equal(headers['x-frame-options'], 'DENY');
  assert.match(headers['content-security-policy'], /frame-ancestors 'none'/);
  assert.equal(headers['cache-control'], 'no-store');
  const row = alice.locator('tr', { has: alice.locator(`a[href="/ui/batches/${liveBatch}"]`) });
  await row.waitFor();
  const before = await row.innerText();
  assert.match(before, /running/, `at first: ${before}`);
  await alice.screenshot({ path: `${shots}/batches-running.png`, fullPage: true });
  // The live region refreshes every 2 s; the batch's hosts wait for `not_before`.
  await alice.waitForFunction((id) => {
    const link = document.querySelector(`a[href="/ui/batches/${id}"]`);
    const text = link?.closest('tr')?.innerText || '';
    return /completed/.test(text) && /3\/3/.test(text);
  }, liveBatch, { timeout: 45000 });
  const progress = await row.locator('progress').evaluate((p) => [p.value, p.max]);
  assert.deepEqual(progress, [3, 3]);
  await alice.screenshot({ path: `${shots}/batches-done.png`, fullPage: true });
  await accessible(alice);
});

await check('the filters narrow the list', async () => {
  await alice.goto(`${base}/ui/?state=cancelled`);
  assert.equal(await alice.locator(`a[href="/ui/batches/${liveBatch}"]`).count(), 0);
  await alice.goto(`${base}/ui/?state=completed&submitter=alice&action=reboot`);
  assert.equal(await alice.locator(`a[href="/ui/batches/${liveBatch}"]`).count(), 1);
});

await check("the batch page shows the failed host's step and error", async () => {
  await alice.goto(`${base}/ui/batches/${failedBatch}`);
  const failures = alice.locator('table', { has: alice.locator('caption', { hasText: 'Hosts that failed' }) });
  await failures.waitFor();
  const text = await failures.innerText();
  assert.match(text, /ghost01\.dc1/, text);
  const row = failures.locator('tr', { hasText: 'ghost01.dc1' });
  const cells = await row.locator('td').allInnerTexts();
  assert.ok(cells[1].length > 0, `the failed step is named: ${cells}`);
  assert.ok(cells[3].length > 0, `the error is shown: ${cells}`);
  // Each host has its step timeline; the healthy ones every step succeeded.
  const timeline = await alice.locator('tr', { hasText: 'sim000001.dc1' }).locator('ol.timeline li').allInnerTexts();
  assert.deepEqual(timeline.map((t) => t.split(' ')[0]), ['preflight', 'power_cycle', 'verify']);
  await alice.screenshot({ path: `${shots}/batch-failed-host.png`, fullPage: true });
  await accessible(alice);
});

await check('the statistics page draws its charts from the rollups, each with its table', async () => {
  await alice.goto(`${base}/ui/stats?by=day`);
  const charts = alice.locator('svg.chart');
  assert.ok(await charts.count() >= 3, `charts: ${await charts.count()}`);
  assert.ok(await alice.locator('svg.chart rect.bar').count() >= 3);
  const table = await alice.locator('table', { has: alice.locator('caption', { hasText: 'reboot by day' }) }).innerText();
  assert.match(table, /\d+\.\d%/, table);
  // The failed host (SKU gen10) shows up where failures are counted by action and SKU.
  const failures = await alice.locator('table', { has: alice.locator('caption', { hasText: 'by action, SKU and site' }) })
    .locator('tr', { hasText: 'gen10' }).allInnerTexts();
  assert.ok(failures.some((row) => /reboot\s+gen10\s+dc1\s+\d+\s+1\s/.test(row)), `failures by SKU: ${failures}`);
  await alice.screenshot({ path: `${shots}/stats.png`, fullPage: true });
  await accessible(alice);
});

await check('active operations and tickets render', async () => {
  await alice.goto(`${base}/ui/active`);
  assert.match(await alice.locator('main').innerText(), /dc1/);
  await alice.screenshot({ path: `${shots}/active.png`, fullPage: true });
  await accessible(alice);
  await alice.goto(`${base}/ui/tickets`);
  assert.match(await alice.locator('h1').innerText(), /Tickets/);
  await accessible(alice);
});

const bob = await as('bob');
await check('a viewer without permission sees no cancel button, and a direct cancel is refused', async () => {
  await bob.goto(`${base}/ui/batches/${heldBatch}`);
  assert.match(await bob.locator('main').innerText(), /running/);
  assert.equal(await bob.locator('button').filter({ hasText: /Cancel|Pause|Resume/ }).count(), 0);
  await bob.screenshot({ path: `${shots}/batch-viewer-no-buttons.png`, fullPage: true });
  // The form the button would send, sent anyway (same origin), and the REST call.
  const form = await bob.evaluate(async (id) => {
    const r = await fetch(`/ui/batches/${id}/cancel`, { method: 'POST' });
    return r.status;
  }, heldBatch);
  assert.equal(form, 403);
  const rest = await bob.evaluate(async (id) => {
    const r = await fetch(`/v1/batches/${id}:cancel`, { method: 'POST' });
    return [r.status, (await r.json()).error.status];
  }, heldBatch);
  assert.deepEqual(rest, [403, 'PERMISSION_DENIED']);
});

await check('its submitter cancels it with the keyboard alone', async () => {
  await alice.goto(`${base}/ui/batches/${heldBatch}`);
  assert.equal(await alice.locator('button', { hasText: 'Cancel batch' }).count(), 1);
  await tabTo(alice, 'button.danger');
  await Promise.all([alice.waitForNavigation(), alice.keyboard.press('Enter')]);
  assert.match(await alice.locator('main').innerText(), /cancell(ing|ed)/);
  await alice.screenshot({ path: `${shots}/batch-cancelled-by-keyboard.png`, fullPage: true });
});

await check('another page cannot frame the console', async () => {
  // A page of another origin (here about:blank) frames the console; the browser would
  // present alice's certificate, so the console must refuse to be shown in the frame.
  const evil = await as('alice');
  const refusal = evil.waitForEvent('console', {
    predicate: (m) => /frame-ancestors|X-Frame-Options/.test(m.text()),
    timeout: 20000,
  });
  await evil.setContent(`<iframe src="${base}/ui/" title="framed console"></iframe>`);
  const message = await refusal;
  assert.match(message.text(), /frame-ancestors 'none'.*(blocked|refused)|Refused to (display|frame)/i, message.text());
  const framed = evil.frames().find((f) => f !== evil.mainFrame());
  const shown = framed ? await framed.evaluate(() => !!document.querySelector('main#main')).catch(() => false) : false;
  assert.equal(shown, false, 'the console rendered inside the frame');
  await evil.screenshot({ path: `${shots}/framed-refused.png`, fullPage: true });
});

await browser.close();
console.log('all console checks passed');
