// The chat room page (examples/chatroom --web) in headless Chromium: two people chat, a
// reload keeps the login (session in localStorage), and so does a server restart (the
// sessions are in files, the server comes back on the same port).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

import { builtExample, within } from './support/helpers.js';
import { repoRoot } from './support/shared.js';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
/** How long the page may take to show something (bounded, generous for a loaded CI machine). */
const UI_MS = 15_000;
const OUTPUT = join(repoRoot, 'js', 'test-output');

/**
 * Starts the chat room for browsers on `addr` with sessions in `sessions`; resolves with
 * its page URL and a `stop()` that shuts it down gracefully (SIGINT, as Ctrl-C).
 * @param {string} addr @param {string} sessions
 */
async function startChatroom(addr, sessions) {
  const binary = builtExample('chatroom', 'WEBWIRE_CHATROOM');
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' };
  const child = spawn(binary, ['--web', '--addr', addr, '--sessions', sessions], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal)));
  const line = await within(
    new Promise((resolve, reject) => {
      createInterface({ input: child.stdout }).once('line', resolve);
      exited.then((code) => reject(new Error(`chatroom exited (${code}) before printing its address`)));
    }),
    'the chat room to print its address',
  );
  const url = /** @type {string} */ (line).split(' ')[0];
  return {
    url,
    stop: async () => {
      child.kill('SIGINT');
      assert.equal(await within(exited, 'the chat room to exit'), 0);
    },
  };
}

let browser;
let sessions;
/** @type {Awaited<ReturnType<typeof startChatroom>> | undefined} */
let chatroom;

before(async () => {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: install it (apt-get install chromium) or set CHROMIUM`);
  }
  sessions = mkdtempSync(join(tmpdir(), 'webwire-chat-sessions-'));
  // launch() gives the browser a fresh, temporary user-data-dir of its own.
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, timeout: 30_000 });
});

after(async () => {
  await browser?.close();
  await chatroom?.stop().catch(() => {});
  if (sessions) rmSync(sessions, { recursive: true, force: true });
});

/** A person with a browser profile of their own (own localStorage), on the page. */
async function visitor(url) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(error));
  await page.goto(url, { timeout: UI_MS });
  await page.locator('#status', { hasText: /^connected$/ }).waitFor({ timeout: UI_MS });
  return { page, errors };
}

async function logIn(page, user, password) {
  await page.fill('#user', user);
  await page.fill('#password', password);
  await page.click('#login button');
  await page.locator('#who', { hasText: user }).waitFor({ timeout: UI_MS });
}

async function say(page, text) {
  await page.fill('#text', text);
  await page.click('#say button');
}

/** Waits until `page` shows the message `text` from `from`. */
function shows(page, from, text) {
  return page.locator('#messages li', { hasText: `${from}${text}` }).waitFor({ timeout: UI_MS });
}

test('two people chat; the login survives a reload and a server restart', async () => {
  chatroom = await startChatroom('127.0.0.1:0', sessions);
  const { url } = chatroom;
  const alice = await visitor(url);
  const bob = await visitor(url);

  // A wrong password is refused with the server's error.
  await alice.page.fill('#user', 'alice');
  await alice.page.fill('#password', 'builder');
  await alice.page.click('#login button');
  await alice.page.locator('#error', { hasText: 'WRONG_CREDENTIALS' }).waitFor({ timeout: UI_MS });

  await logIn(alice.page, 'alice', 'wonderland');
  await logIn(bob.page, 'bob', 'builder');
  await say(alice.page, 'hello bob');
  await shows(bob.page, 'alice', 'hello bob');
  await shows(alice.page, 'alice', 'hello bob');

  // Markup in a message is shown as text: no element made of it, no script run.
  const dialogs = [];
  bob.page.on('dialog', (dialog) => {
    dialogs.push(dialog.message());
    void dialog.dismiss();
  });
  const markup = '<img src=x onerror=alert(1)>';
  await say(alice.page, markup);
  await shows(bob.page, 'alice', markup);
  const last = bob.page.locator('#messages li').last();
  assert.equal(await last.textContent(), `alice${markup}`);
  assert.equal(await bob.page.locator('#messages img').count(), 0);
  assert.deepEqual(dialogs, []);

  // A reload: the page restores the session it kept in localStorage, no login form.
  await alice.page.reload({ timeout: UI_MS });
  await alice.page.locator('#who', { hasText: 'alice' }).waitFor({ timeout: UI_MS });
  assert.equal(await alice.page.isVisible('#login'), false);

  // The server restarts on the same port with the same session files: both pages
  // reconnect and restore their logins.
  const port = new URL(url).port;
  await chatroom.stop();
  chatroom = undefined;
  await alice.page.locator('#status', { hasText: 'reconnecting' }).waitFor({ timeout: UI_MS });
  chatroom = await startChatroom(`127.0.0.1:${port}`, sessions);
  for (const { page } of [alice, bob]) {
    await page.locator('#status', { hasText: /^connected$/ }).waitFor({ timeout: UI_MS });
  }
  await say(bob.page, 'welcome back');
  await shows(alice.page, 'bob', 'welcome back');
  assert.equal(await alice.page.textContent('#who'), 'alice');

  mkdirSync(OUTPUT, { recursive: true });
  await alice.page.screenshot({ path: join(OUTPUT, 'chatroom.png'), fullPage: true });

  // Logging out shows the login form again, also after a reload.
  await alice.page.click('#logout');
  await alice.page.locator('#login').waitFor({ state: 'visible', timeout: UI_MS });
  await alice.page.reload({ timeout: UI_MS });
  await alice.page.locator('#status', { hasText: /^connected$/ }).waitFor({ timeout: UI_MS });
  assert.equal(await alice.page.isVisible('#chat'), false);
  assert.deepEqual([...alice.errors, ...bob.errors], []);
});

test('a page whose connection drops while others talk shows every message once it is back', async () => {
  chatroom ??= await startChatroom('127.0.0.1:0', sessions);
  const { url } = chatroom;
  // Alice's page talks to the server through a route the test controls: it can drop her
  // connection and hold her reconnection while Bob talks.
  const context = await browser.newContext();
  /** @type {import('playwright-core').WebSocketRoute | null} */
  let current = null;
  let open = Promise.resolve();
  let letIn = () => {};
  await context.routeWebSocket(/\/ws$/, async (ws) => {
    current = ws;
    await open;
    ws.connectToServer();
  });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(error));
  await page.goto(url, { timeout: UI_MS });
  await page.locator('#status', { hasText: /^connected$/ }).waitFor({ timeout: UI_MS });
  await logIn(page, 'alice', 'wonderland');
  const bob = await visitor(url);
  await logIn(bob.page, 'bob', 'builder');
  await say(bob.page, 'before the drop');
  await shows(page, 'bob', 'before the drop');

  // Dropped: the next connection waits until the test lets it through.
  open = new Promise((resolve) => {
    letIn = resolve;
  });
  current?.close({ code: 4000, reason: 'dropped by the test' });
  await page.locator('#status', { hasText: 'reconnecting' }).waitFor({ timeout: UI_MS });
  const missed = ['one', 'two', 'three'];
  for (const text of missed) {
    await say(bob.page, text);
    await shows(bob.page, 'bob', text);
  }
  letIn();
  await page.locator('#status', { hasText: /^connected$/ }).waitFor({ timeout: UI_MS });
  for (const text of missed) await shows(page, 'bob', text);
  await say(bob.page, 'after');
  await shows(page, 'bob', 'after');
  const texts = await page.locator('#messages li').allTextContents();
  const fromBob = texts.filter((text) => text.startsWith('bob'));
  assert.deepEqual(fromBob, ['bobbefore the drop', 'bobone', 'bobtwo', 'bobthree', 'bobafter'], 'each once, in order');
  assert.deepEqual([...errors, ...bob.errors], []);
  await context.close();
});
