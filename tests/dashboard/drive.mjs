// Drives the admin dashboard (src/admin/dashboard.html, served by the admin
// listener) in headless Debian Chromium. Run by a Rust test:
//
//   ADMIN_URL=http://127.0.0.1:PORT ADMIN_TOKEN=... EXPECT_SHADOW=N EXPECT_ALLOW=N \
//   UNBLOCK_KEY='prefix:8=+44740012' SCREENSHOT=/tmp/dash.png [CHROMIUM=/usr/bin/chromium] \
//   EXPECT_MONEY='{"saved": "0.43 USD", "spent": "0.08 USD", "left": "4.92 USD"}' \
//   EXPECT_CONVERSION='{"regions": [{"region": "US", "forwarded": 5, "confirmed": 4, "rate": "80%", "low": false}],
//                       "lowest_prefix": "+44740012"}' \
//   node tests/dashboard/drive.mjs
//
// Prints one JSON line {"ok": true, "updates": N} and exits 0, or explains the
// failed check on stderr and exits 1.
import { chromium } from 'playwright-core';

const env = process.env;
const WAIT_MS = 15000;

function need(name) {
  const v = env[name];
  if (v === undefined || v === '') fail(`environment variable ${name} is required`);
  return v;
}
function fail(msg) {
  const e = new Error(msg);
  e.check = true;
  throw e;
}
function int(name) {
  const v = need(name);
  if (!/^\d+$/.test(v)) fail(`${name} must be a non-negative integer, got ${JSON.stringify(v)}`);
  return v.replace(/^0+(?=\d)/, '');
}

async function main() {
  const base = need('ADMIN_URL').replace(/\/+$/, '');
  const token = need('ADMIN_TOKEN');
  const expectShadow = int('EXPECT_SHADOW');
  const expectAllow = int('EXPECT_ALLOW');
  const unblockKey = need('UNBLOCK_KEY');
  let expectConversion;
  try { expectConversion = JSON.parse(need('EXPECT_CONVERSION')); } catch (e) {
    if (e.check) throw e;
    fail(`EXPECT_CONVERSION is not JSON: ${e.message}`);
  }
  let expectMoney;
  try { expectMoney = JSON.parse(need('EXPECT_MONEY')); } catch (e) {
    if (e.check) throw e;
    fail(`EXPECT_MONEY is not JSON: ${e.message}`);
  }
  const screenshot = need('SCREENSHOT');
  const executablePath = env.CHROMIUM || '/usr/bin/chromium';

  const browser = await chromium.launch({
    executablePath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    // 1. open with the token, wait for the first successful refresh
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await ctx.newPage();
    const pageErrors = [];
    page.on('pageerror', e => pageErrors.push(String(e)));
    const resp = await page.goto(`${base}/?token=${encodeURIComponent(token)}`, { waitUntil: 'load' });
    if (!resp || !resp.ok()) fail(`GET /?token=… answered ${resp ? resp.status() : 'nothing'}`);
    await page.waitForFunction(() => Number(document.body.dataset.updates || 0) >= 1, null, { timeout: WAIT_MS })
      .catch(async () => fail(`the page never finished a refresh in ${WAIT_MS / 1000} s; status: ${await statusText(page)}`));

    // 2. the numbers and tables
    const totals = await page.evaluate(() => ({
      shadow: document.querySelector('#total-shadow')?.textContent ?? null,
      allow: document.querySelector('#total-allow')?.textContent ?? null,
    }));
    for (const [name, want] of [['shadow', expectShadow], ['allow', expectAllow]]) {
      const text = totals[name];
      if (text === null) fail(`#total-${name} is missing`);
      const got = text.replace(/\D/g, '');
      if (got !== want) fail(`#total-${name} shows ${JSON.stringify(text)}, expected ${want}`);
    }
    // the money a manager asks for first: saved, spent, budget left
    for (const [name, want] of Object.entries(expectMoney)) {
      const text = await page.locator(`#money-${name}`).textContent();
      if (text !== want) fail(`#money-${name} shows ${JSON.stringify(text)}, expected ${JSON.stringify(want)}`);
    }
    const prefixRows = await page.locator('#top-prefixes tr').count();
    if (prefixRows < 1) fail('#top-prefixes has no row');
    const hasKey = k => [...document.querySelectorAll('#blocks button[data-key]')].some(b => b.dataset.key === k);
    if (!(await page.evaluate(hasKey, unblockKey))) {
      const keys = await page.evaluate(() => [...document.querySelectorAll('#blocks button[data-key]')].map(b => b.dataset.key));
      fail(`#blocks has no Unblock button for ${unblockKey}; it has ${JSON.stringify(keys)}`);
    }
    // the Conversion panel: one row per region with its figures, rates under 50% marked
    const conv = await page.evaluate(() => {
      const rows = t => [...document.querySelectorAll(`#${t} tr`)].map(tr => {
        const cells = [...tr.cells];
        const rate = cells[cells.length - 1];
        return {
          cells: cells.map(td => td.textContent),
          low: !!rate && rate.classList.contains('low') && tr.classList.contains('low'),
          // a marked rate must look different from the region's name
          lowColour: !!rate && getComputedStyle(rate).color !== getComputedStyle(cells[0]).color,
        };
      });
      const note = document.querySelector('#conv-note');
      return { regions: rows('conv-regions'), prefixes: rows('conv-prefixes'),
        note: note && note.offsetParent !== null ? note.textContent : '' };
    });
    if (!/seconds to minutes/.test(conv.note)) fail(`the Conversion panel does not say that confirmations lag: ${JSON.stringify(conv.note)}`);
    for (const want of expectConversion.regions || []) {
      const row = conv.regions.find(r => r.cells[0] === want.region);
      if (!row) fail(`#conv-regions has no row for ${want.region}; it has ${JSON.stringify(conv.regions.map(r => r.cells))}`);
      const got = [row.cells[1].replace(/\D/g, ''), row.cells[2].replace(/\D/g, ''), row.cells[3]];
      const exp = [String(want.forwarded), String(want.confirmed), want.rate];
      if (JSON.stringify(got) !== JSON.stringify(exp)) fail(`#conv-regions ${want.region} shows ${JSON.stringify(row.cells)}, expected forwarded/confirmed/rate ${JSON.stringify(exp)}`);
      if (row.low !== !!want.low) fail(`#conv-regions ${want.region} (${row.cells[3]}) is ${row.low ? '' : 'not '}marked as low`);
      if (row.low && !row.lowColour) fail(`#conv-regions ${want.region} is marked low but its rate looks like any other cell`);
    }
    if (expectConversion.lowest_prefix) {
      const first = conv.prefixes[0];
      if (!first || first.cells[0] !== expectConversion.lowest_prefix || !first.low) {
        fail(`#conv-prefixes should start with ${expectConversion.lowest_prefix}, marked low; it has ${JSON.stringify(conv.prefixes)}`);
      }
    }

    // recent decisions show the client and, for a stopped send, the rule's figures
    const dec = await page.evaluate(() => [...document.querySelectorAll('#decisions tr')].map(tr => [...tr.cells].map(td => td.textContent)));
    if (!dec.length) fail('#decisions has no row');
    if (!dec.every(r => r[2] && r[2].length > 0)) fail(`#decisions rows without a client: ${JSON.stringify(dec.slice(0, 3))}`);
    if (!dec.some(r => /^\S+: \S/.test(r[4]))) fail(`no #decisions row shows a rule with its figures: ${JSON.stringify(dec.slice(0, 5))}`);

    // the token must not stay in the page: not in the DOM, the address, storage or script-visible cookies
    const leak = await page.evaluate(t => {
      const where = [];
      if (document.documentElement.outerHTML.includes(t)) where.push('DOM');
      if (location.href.includes(t)) where.push('address bar');
      if (document.cookie.includes(t)) where.push('document.cookie (cookie not HttpOnly)');
      for (const [n, s] of [['localStorage', localStorage], ['sessionStorage', sessionStorage]]) {
        for (let i = 0; i < s.length; i++) if ((s.getItem(s.key(i)) || '').includes(t) || s.key(i).includes(t)) where.push(n);
      }
      return where;
    }, token);
    if (leak.length) fail(`the admin token is readable in: ${leak.join(', ')}`);

    // 3. screenshot
    await page.screenshot({ path: screenshot, fullPage: true });

    // 4. unblock, and the row goes away
    const btn = page.locator(`#blocks button[data-key="${cssString(unblockKey)}"]`);
    await btn.first().click({ timeout: WAIT_MS });
    await page.waitForFunction(k => ![...document.querySelectorAll('#blocks button[data-key]')].some(b => b.dataset.key === k),
      unblockKey, { timeout: 10000 })
      .catch(() => fail(`after clicking Unblock, ${unblockKey} was still listed in #blocks after 10 s`));
    // it must stay gone after the next refresh (the server really removed it)
    const n0 = await updates(page);
    await page.waitForFunction(n => Number(document.body.dataset.updates || 0) > n, n0, { timeout: WAIT_MS })
      .catch(() => fail('the page stopped refreshing after the unblock'));
    if (await page.evaluate(hasKey, unblockKey)) fail(`${unblockKey} came back in #blocks after a refresh: the server still has it`);
    // 4b. block a number written as people write it: the form's block is
    // stored in E.164 (what sends carry), and a value no send could carry
    // is refused with the guard's reason
    await page.selectOption('#ab-kind', 'to');
    await page.fill('#ab-value', '+1 (303) 555-0199');
    await page.selectOption('#ab-dur', '1h');
    await page.locator('#addblock button[type=submit]').click();
    await page.waitForFunction(k => [...document.querySelectorAll('#blocks button[data-key]')].some(b => b.dataset.key === k),
      'to=+13035550199', { timeout: WAIT_MS })
      .catch(async () => fail(`the form's block of "+1 (303) 555-0199" is not listed as to=+13035550199; toast: ${await page.locator('#toast').textContent()}`));
    await page.selectOption('#ab-kind', 'to');
    await page.fill('#ab-value', 'hello');
    await page.locator('#addblock button[type=submit]').click();
    await page.waitForFunction(() => /Block failed: .*not a phone number/.test(document.querySelector('#toast')?.textContent || ''), null, { timeout: WAIT_MS })
      .catch(async () => fail(`blocking "hello" did not say why it failed; toast: ${await page.locator('#toast').textContent()}`));
    if (pageErrors.length) fail(`the page threw: ${pageErrors.join(' | ')}`);
    const finalUpdates = await updates(page);
    await ctx.close();

    // 5. without the token, in a fresh context: "not authorized" and no totals
    const ctx2 = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page2 = await ctx2.newPage();
    const resp2 = await page2.goto(`${base}/`, { waitUntil: 'load' });
    const status2 = resp2 ? resp2.status() : 0;
    if (status2 !== 401) {
      await page2.waitForFunction(() => /not authori[sz]ed/i.test(document.body?.innerText || ''), null, { timeout: WAIT_MS })
        .catch(() => fail(`GET / without the token answered ${status2} and the page never said "not authorized"`));
    }
    const shown = await page2.evaluate(() => ({
      updates: Number(document.body?.dataset.updates || 0),
      totals: [...document.querySelectorAll('[id^="total-"]')]
        .filter(e => e.offsetParent !== null && /\d/.test(e.textContent)).map(e => `${e.id}=${e.textContent}`),
    }));
    if (shown.updates > 0) fail('without the token the page still completed a refresh');
    if (shown.totals.length) fail(`without the token the page shows totals: ${shown.totals.join(', ')}`);
    await ctx2.close();

    // 6. done
    process.stdout.write(JSON.stringify({ ok: true, updates: finalUpdates }) + '\n');
  } finally {
    await browser.close().catch(() => {});
  }
}

function cssString(s) {
  return s.replace(/\\/g, '\\\\').replace(/"/g, '\\"');
}
async function updates(page) {
  return page.evaluate(() => Number(document.body.dataset.updates || 0));
}
async function statusText(page) {
  return page.evaluate(() => {
    const auth = document.querySelector('#auth');
    const st = document.querySelector('#status')?.textContent || '';
    return auth && !auth.hidden ? `not authorized; ${st}` : st;
  }).catch(e => String(e));
}

const watchdog = setTimeout(() => {
  process.stderr.write('dashboard drive: gave up after 90 s\n');
  process.exit(1);
}, 90000);
watchdog.unref();

main().then(
  () => { process.exitCode = 0; },
  e => {
    process.stderr.write(`dashboard drive FAILED: ${e && e.check ? e.message : (e && e.stack) || e}\n`);
    process.exitCode = 1;
  },
);
