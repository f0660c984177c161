// Browser test of sessiond's web console (daemon/console/): headless Debian chromium driven by
// playwright-core against a running admin listener. run.sh starts a 2-node cluster with load and
// one known session, then runs this script; it also runs against any admin listener:
//
//   ADMIN_URL=http://127.0.0.1:7601 SESSION_ID=... SESSION_USER=alice node console.test.mjs
//
// Environment: ADMIN_URL (required); SESSION_ID and SESSION_USER (a session to look up);
// SESSION_FIELD and SESSION_VALUE (optional: one of its fields and that field's value);
// SESSION_ACCESS_IP (optional: the address of an access recorded in its history);
// EXPECT_NODES (node ids shown up, default n1,n2); ARTIFACT_DIR (screenshots, default .);
// DOCS_SCREENSHOT (optional second copy of the screenshot). Exit status 1 on any failure.
// Every wait polls the page with a deadline.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {chromium} from 'playwright-core';

const env = process.env;
const adminUrl = required('ADMIN_URL').replace(/\/+$/, '');
const sessionId = required('SESSION_ID');
const sessionUser = required('SESSION_USER');
const expectNodes = (env.EXPECT_NODES || 'n1,n2').split(',').filter(Boolean);
const artifactDir = env.ARTIFACT_DIR || '.';
const kWaitMs = 30000;

function required(name) {
  if (!env[name]) {
    console.error(`console.test: environment variable ${name} is not set`);
    process.exit(2);
  }
  return env[name];
}

// Polls probe() (run in the page) until check(value) holds; fails naming what and the last value.
async function waitFor(page, what, probe, check, arg) {
  const deadline = Date.now() + kWaitMs;
  let last;
  for (;;) {
    try {
      last = await page.evaluate(probe, arg);
      if (check(last)) return last;
    } catch (e) {
      last = `evaluate failed: ${e.message}`;
    }
    if (Date.now() >= deadline) {
      const status = await page.textContent('#last-update').catch(() => '?');
      throw new Error(`${what}: not within ${kWaitMs / 1000} s; ` +
        `last seen ${JSON.stringify(last)}; #last-update says ${JSON.stringify(status)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

const nodeStates = () => [...document.querySelectorAll('#nodes [data-testid="node-row"]')].map(
  (row) => [row.dataset.node, row.querySelector('[data-testid="node-status"]').textContent]);
const lookupText = () => document.getElementById('lookup-result').textContent;

async function run(page) {
  const pageErrors = [];
  page.on('pageerror', (error) => pageErrors.push(error.message));
  const response = await page.goto(`${adminUrl}/`, {waitUntil: 'load', timeout: kWaitMs});
  assert.equal(response.status(), 200, `GET ${adminUrl}/ answered ${response.status()}`);
  assert.equal(await page.evaluate(() => typeof Chart), 'function', '/chart.min.js did not load');

  // Cluster map: every expected node up, sessions counted, ops/s charted.
  await waitFor(page, `node rows ${expectNodes} shown up`, nodeStates, (rows) => {
    const up = new Set(rows.filter(([, state]) => state === 'up').map(([id]) => id));
    return expectNodes.every((id) => up.has(id));
  });
  const total = await waitFor(page, '#sessions-total > 0',
    () => Number(document.getElementById('sessions-total').textContent.replace(/[^\d.]/g, '')),
    (n) => n > 0);
  console.log(`console.test: nodes up, ${total} sessions over up nodes`);
  await waitFor(page, 'ops/s chart with data > 0', () => {
    const chart = Chart.getChart('chart-ops');
    return chart ? chart.data.datasets[0].data.filter((v) => v > 0).length : -1;
  }, (n) => n > 0);
  await waitFor(page, 'latency and sessions charts with data', () =>
    ['chart-latency', 'chart-sessions']
      .map((id) => Chart.getChart(id)?.data.datasets[0].data.length),
  (lengths) => lengths.every((n) => n > 0));
  await waitFor(page, 'a successful poll', () => {
    const status = document.getElementById('last-update');
    return status.classList.contains('error') ? status.textContent : '';
  }, (error) => error === '');
  assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= innerWidth),
    'the page is wider than the 1280 px viewport');

  // Lookup by id: the user and the field names, no values unless "show values" is ticked.
  await page.fill('#lookup-input', sessionId);
  await page.click('#lookup-by-id');
  await waitFor(page, `session ${sessionId} shown with user ${sessionUser}`,
    () => document.querySelector('#lookup-result [data-testid="session-user"]')?.textContent ||
      lookupText(), (text) => text === sessionUser);
  assert.equal(await page.locator('#lookup-result [data-testid="field-value"]').count(), 0,
    'a field value is shown without "show values"');
  if (env.SESSION_FIELD) {
    const names = await page.locator('#lookup-result [data-testid="field-row"] td:first-child')
      .allTextContents();
    assert.ok(names.includes(env.SESSION_FIELD), `field ${env.SESSION_FIELD} not in ${names}`);
  }
  if (env.SESSION_ACCESS_IP) {
    const accesses = await page.locator('#lookup-result [data-testid="access-row"]')
      .allTextContents();
    assert.ok(accesses.some((row) => row.includes(env.SESSION_ACCESS_IP)),
      `no access from ${env.SESSION_ACCESS_IP} in the history: ${JSON.stringify(accesses)}`);
  }
  if (env.SESSION_VALUE) {
    assert.ok(!(await page.evaluate(lookupText)).includes(env.SESSION_VALUE),
      'the field value is in the page without "show values"');
    await page.check('#lookup-values');
    await page.click('#lookup-by-id');
    await waitFor(page, 'the field value shown with "show values"', () =>
      [...document.querySelectorAll('#lookup-result [data-testid="field-value"]')]
        .map((cell) => cell.textContent), (values) => values.includes(env.SESSION_VALUE));
    await page.uncheck('#lookup-values');
  }

  // Lookup by user: the session listed by its prefix; with "reveal ids" it opens by a click.
  await page.fill('#lookup-input', sessionUser);
  await page.click('#lookup-by-user');
  const prefixes = await waitFor(page, `user ${sessionUser}'s sessions listed`, () =>
    [...document.querySelectorAll('#lookup-result [data-testid="user-session-row"]')]
      .map((row) => row.dataset.idPrefix), (list) => list.length > 0);
  assert.ok(prefixes.some((prefix) => prefix && sessionId.startsWith(prefix)),
    `no listed id prefix (${prefixes}) starts ${sessionId}`);
  await page.check('#lookup-reveal');
  await page.click('#lookup-by-user');
  await waitFor(page, 'the revealed id listed', (id) =>
    [...document.querySelectorAll('#lookup-result [data-testid="user-session-row"] button')]
      .some((button) => button.textContent === id), (found) => found, sessionId);
  await page.click(`#lookup-result [data-testid="user-session-row"] button >> text="${sessionId}"`);
  await waitFor(page, 'the session opened from the user list',
    () => document.querySelector('#lookup-result [data-testid="session-id"]')?.textContent,
    (id) => id === sessionId);
  assert.equal(await page.locator('#lookup-result [data-testid="field-value"]').count(), 0,
    'a field value is shown after opening from the user list');

  // An unknown id (well formed: 32 random bytes) shows the daemon's 404 text.
  await page.fill('#lookup-input', crypto.randomBytes(32).toString('base64url'));
  await page.click('#lookup-by-id');
  await waitFor(page, 'the 404 of an unknown id shown', () =>
    document.querySelector('#lookup-result [data-testid="lookup-error"]')?.textContent || '',
  (text) => /no such session/.test(text));

  // Back to the known session for the screenshot.
  await page.fill('#lookup-input', sessionId);
  await page.click('#lookup-by-id');
  await waitFor(page, 'the session shown again',
    () => document.querySelector('#lookup-result [data-testid="session-user"]')?.textContent,
    (text) => text === sessionUser);
  await screenshot(page, path.join(artifactDir, 'console.png'));
  if (env.DOCS_SCREENSHOT) await screenshot(page, env.DOCS_SCREENSHOT);

  // Narrow: one column.
  await page.setViewportSize({width: 600, height: 800});
  const columns = await page.evaluate(() =>
    getComputedStyle(document.querySelector('main')).gridTemplateColumns.split(' ').length);
  assert.equal(columns, 1, 'the layout keeps several columns at 600 px');

  assert.deepEqual(pageErrors, [], 'uncaught errors in the page');
}

async function screenshot(page, file) {
  fs.mkdirSync(path.dirname(path.resolve(file)), {recursive: true});
  await page.screenshot({path: file, fullPage: true});
  console.log(`console.test: screenshot ${file}`);
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox'],
  headless: true,
  timeout: kWaitMs,
});
let failed = false;
try {
  const context = await browser.newContext({viewport: {width: 1280, height: 800}, locale: 'en-US'});
  const page = await context.newPage();
  page.setDefaultTimeout(kWaitMs);
  try {
    await run(page);
  } catch (e) {
    failed = true;
    console.error(`console.test: FAILED: ${e.message}`);
    await screenshot(page, path.join(artifactDir, 'console-failure.png')).catch(() => {});
  }
} finally {
  await browser.close();
}
if (failed) process.exit(1);
console.log('console.test: ok');
