// Drives the gateway's dashboard in headless Chromium (the Debian package) with playwright-core,
// checks each page with axe-core, and saves screenshots. Run by tests/tests/dashboard.rs, which
// starts the gateway, the cron connector and the functions first and passes them in:
//   UI_URL, UI_USER, UI_PASSWORD, UI_SCREENSHOTS, CHROMIUM, UI_DEAD_CALL_ID, UI_CRON_FUNCTION
// Prints `ok - STEP` per step and a last line `RESULT {json}`; exits 1 on the first failure.
import { readFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { chromium } from 'playwright-core';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const base = env('UI_URL');
const shots = env('UI_SCREENSHOTS');
const deadCallId = env('UI_DEAD_CALL_ID');
const cronFunction = env('UI_CRON_FUNCTION');
mkdirSync(shots, { recursive: true });
const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

const browser = await chromium.launch({ executablePath: env('CHROMIUM'), args: ['--no-sandbox'] });
// bypassCSP lets axe-core be injected; the pages themselves run under their own CSP otherwise.
const context = await browser.newContext({ bypassCSP: true, viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
page.setDefaultTimeout(15000);
const consoleErrors = [];
// The refused login's 401 is logged by the browser as a failed load: expected, not an error.
page.on('console', (m) => { if (m.type() === 'error' && !m.text().includes('401')) consoleErrors.push(m.text()); });
page.on('pageerror', (e) => consoleErrors.push(e.message));
// Every confirmation is recorded (and accepted): writes must ask first.
const dialogs = [];
page.on('dialog', (d) => { dialogs.push(d.message()); d.accept(); });
const result = { accessibility: {}, screenshots: [] };

async function shot(name) {
  const path = `${shots}/${name}.png`;
  await page.screenshot({ path, fullPage: true });
  result.screenshots.push(path);
}

/** axe-core on the current page: fails on serious or critical violations. */
async function accessible(name) {
  await page.addScriptTag({ content: axeSource });
  const r = await page.evaluate(async () => window.axe.run(document, { resultTypes: ['violations'] }));
  const counted = r.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.length }));
  result.accessibility[name] = counted;
  const bad = r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  if (bad.length) {
    throw new Error(`axe-core on ${name}: ${bad.map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`).join('; ')}`);
  }
}

async function step(name, run) {
  try {
    await run();
    console.log(`ok - ${name}`);
  } catch (e) {
    await page.screenshot({ path: `${shots}/failed-${name.replace(/\W+/g, '-')}.png`, fullPage: true }).catch(() => {});
    console.log(`not ok - ${name}: ${e.message}`);
    console.log(`page: ${page.url()}\n${(await page.locator('body').innerText().catch(() => '')).slice(0, 3000)}`);
    if (consoleErrors.length) console.log(`console errors: ${consoleErrors.join(' | ')}`);
    await browser.close();
    process.exit(1);
  }
}

const text = (selector) => page.locator(selector).innerText();
const expectText = async (selector, needle) => {
  await page.waitForFunction(([s, n]) => document.querySelector(s)?.innerText.includes(n), [selector, needle]);
};
const go = async (hash, heading) => {
  await page.locator(`nav a[href="${hash}"]`).click();
  await expectText('main h1', heading);
};

await step('a wrong password is refused', async () => {
  const r = await page.goto(`${base}/ui/`);
  if (!page.url().endsWith('/ui/login')) throw new Error(`not sent to the login page: ${page.url()} (${r.status()})`);
  await accessible('login');
  await page.fill('#user', env('UI_USER'));
  await page.fill('#password', 'not-the-password');
  const [answer] = await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  if (answer.status() !== 401) throw new Error(`answered ${answer.status()}, not 401`);
  await expectText('.error', 'Wrong user name or password');
  await shot('login-refused');
});

await step('log in and see the example stack', async () => {
  await page.fill('#password', env('UI_PASSWORD'));
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
  await expectText('main h1', 'Functions');
  for (const name of ['hello', 'wordcount', 'echo']) {
    await page.locator(`tr[data-function="${name}"]`).waitFor();
  }
  await expectText('tr[data-function="echo"]', 'Ready');
  await expectText('tr[data-function="hello"]', '*/1 * * * *');
  await shot('functions');
  await accessible('functions');
});

await step('invoke a function and see its answer', async () => {
  await page.locator('a[data-key="fn-echo"]').click();
  await expectText('main h1', 'echo');
  await page.fill('#headers', 'Content-Type: text/plain\nX-From: the dashboard');
  await page.fill('#body', 'hello from the browser');
  await page.click('#invoke button[type=submit]');
  await expectText('#answer-status', '200');
  await expectText('#answer-body', 'hello from the browser');
  await expectText('#state', 'available of');
  await page.waitForFunction(() => {
    const logs = document.querySelector('#logs').innerText;
    return logs.length > 0 && !logs.includes('waiting for logs');
  });
  if ((await text('#logs')).includes('not available')) throw new Error(`no logs: ${await text('#logs')}`);
  await shot('function-echo');
  await accessible('function');
});

await step('a cron firing appears without reloading', async () => {
  await go('#/flow', 'Event flow');
  await page.evaluate(() => { window.notReloaded = true; });
  const row = `tr.flow[data-connector="cron-connector"][data-function="${cronFunction}.openfaas-fn"]`;
  await page.locator(row).waitFor();
  const first = Number(await page.locator(`${row} .calls`).innerText());
  await page.waitForFunction(([r, n]) => Number(document.querySelector(`${r} .calls`)?.innerText) > n, [row, first]);
  if (!(await page.evaluate(() => window.notReloaded))) throw new Error('the page was reloaded');
  await expectText('#cron', cronFunction);
  await shot('flow');
  await accessible('flow');
});

await step('see a dead letter, fix the function, redrive it and see it delivered', async () => {
  await go('#/queue', 'Async queue');
  const row = `tr.dead-letter[data-call-id="${deadCallId}"]`;
  await page.locator(row).waitFor();
  await expectText(row, 'gave up after');
  await shot('queue-dead-letter');
  await accessible('queue');
  // The function always answered 500: drop that setting through the update form.
  await page.goto(`${base}/ui/#/function/flaky`);
  await page.waitForFunction(() => document.querySelector('#deployment')?.value.includes('ALWAYS_STATUS'));
  const deployment = JSON.parse(await page.inputValue('#deployment'));
  delete deployment.envVars.ALWAYS_STATUS;
  await page.fill('#deployment', JSON.stringify(deployment, null, 2));
  await page.click('#update button[type=submit]');
  await expectText('#msg', 'Updated flaky.');
  await go('#/queue', 'Async queue');
  await page.locator(`${row} button[data-action="redrive"]`).click();
  await page.locator(row).waitFor({ state: 'detached' });
  await go('#/flow', 'Event flow');
  // The newest call with that id (the recent list is newest first) answered 200.
  const call = `tr.call[data-call-id="${deadCallId}"]`;
  await page.waitForFunction((c) => document.querySelector(c)?.querySelector('td.num')?.innerText === '200', call);
  await shot('redriven-delivered');
});

await step('deploy, scale and delete from the dashboard', async () => {
  await go('#/deploy', 'Deploy a function');
  await accessible('deploy');
  await page.fill('#d-name', 'from-ui');
  await page.fill('#d-image', 'example/cat:1');
  await page.fill('#d-process', 'cat');
  await page.fill('#d-topics', 'made-in-ui');
  await page.click('#deploy button[type=submit]');
  await expectText('main h1', 'from-ui');
  await expectText('#state', '1 available of 1');
  await page.fill('#replicas', '2');
  await page.click('#scale button[type=submit]');
  await expectText('#msg', 'Scaled from-ui to 2.');
  await expectText('#state', '2 available of 2');
  await shot('function-scaled');
  await page.click('#delete');
  await expectText('main h1', 'Functions');
  await page.locator('tr[data-function="echo"]').waitFor();
  if (await page.locator('tr[data-function="from-ui"]').count()) throw new Error('from-ui is still listed');
  for (const asked of ['Deploy from-ui', 'Scale from-ui to 2', 'Delete from-ui']) {
    if (!dialogs.some((d) => d.startsWith(asked))) throw new Error(`no confirmation "${asked}…": ${dialogs.join(' | ')}`);
  }
});

await step('keyboard: skip link, then the navigation by Tab and Enter', async () => {
  await page.goto(`${base}/ui/`);
  await expectText('main h1', 'Functions');
  await page.keyboard.press('Tab');
  if ((await page.evaluate(() => document.activeElement.textContent)) !== 'Skip to content') {
    throw new Error('the first Tab stop is not the skip link');
  }
  for (let i = 0; i < 10; i += 1) {
    await page.keyboard.press('Tab');
    if ((await page.evaluate(() => document.activeElement.textContent)) === 'Async queue') break;
  }
  await page.keyboard.press('Enter');
  await expectText('main h1', 'Async queue');
  const focused = await page.evaluate(() => document.activeElement.tagName);
  if (focused !== 'H1') throw new Error(`focus went to ${focused}, not the page heading`);
});

await step('readable at phone width', async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  for (const [hash, name] of [['#/functions', 'phone-functions'], ['#/flow', 'phone-flow'], ['#/queue', 'phone-queue']]) {
    await page.goto(`${base}/ui/${hash}`);
    await page.waitForTimeout(600);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    if (overflow > 1) throw new Error(`${hash} is ${overflow}px wider than the phone's screen`);
    await shot(name);
  }
});

await step('page weight', async () => {
  const sizes = {};
  const fresh = await context.newPage();
  fresh.on('response', async (r) => {
    if (r.url().includes('/ui/')) sizes[new URL(r.url()).pathname] = (await r.body().catch(() => Buffer.alloc(0))).length;
  });
  await fresh.goto(`${base}/ui/`);
  await fresh.waitForLoadState('networkidle');
  await fresh.close();
  result.pageWeight = sizes;
  result.pageWeightBytes = Object.values(sizes).reduce((a, b) => a + b, 0);
});

if (consoleErrors.length) {
  console.log(`not ok - console errors: ${consoleErrors.join(' | ')}`);
  await browser.close();
  process.exit(1);
}
await browser.close();
console.log(`RESULT ${JSON.stringify(result)}`);
