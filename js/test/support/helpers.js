// Shared by the Node tests: the peer server (examples/peer), a scriptable fake server for
// what the real one never does (bad frames), and bounded waits.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before } from 'node:test';
import WebSocket, { WebSocketServer } from 'ws';

import { connect } from '../../webwire.js';
import { repoRoot } from './shared.js';

/** How long any one wait in a test may take before it fails instead of hanging. */
export const BOUND_MS = 10_000;

/**
 * Resolves with `promise`'s value, or rejects after `ms` with what was awaited.
 * @template T @param {Promise<T>} promise @param {string} what @param {number} [ms]
 * @returns {Promise<T>}
 */
export function within(promise, what, ms = BOUND_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * The next `type` event of `target` (bounded).
 * @param {EventTarget} target @param {string} type @param {number} [ms]
 * @returns {Promise<CustomEvent>}
 */
export function nextEvent(target, type, ms) {
  return within(new Promise((resolve) => target.addEventListener(type, resolve, { once: true })), `event ${type}`, ms);
}

/** Where a built example binary is: CARGO_TARGET_DIR or the repository's target/. @param {string} name */
export function exampleBinary(name) {
  const target = process.env.CARGO_TARGET_DIR ?? join(repoRoot, 'target');
  return join(target, 'debug', 'examples', name);
}

/**
 * The path of a built example, or an error that says how to build it. (Not `cargo run`:
 * a test that starts a whole build on its own would hide a missing build step in CI.)
 * @param {string} name @param {string} variable the environment variable that overrides it
 */
export function builtExample(name, variable) {
  const binary = process.env[variable] ?? exampleBinary(name);
  if (!existsSync(binary)) {
    throw new Error(
      `${binary} is missing: build it with \`cargo build --all-features --examples\` ` +
        `(with the same CARGO_TARGET_DIR), or set ${variable} to the binary`,
    );
  }
  return binary;
}

/**
 * Starts the built `examples/peer` and reads its URLs. Stopped by `stop()`, or by the end
 * of its stdin when this process dies.
 * @returns {Promise<{url: string, noSessionsUrl: string, exited: Promise<number | null>, stop: () => Promise<void>}>}
 */
export async function startPeer() {
  const command = builtExample('peer', 'WEBWIRE_PEER');
  const args = ['--addr', '127.0.0.1:0'];
  // The tests provoke handler errors on purpose: the peer's log stays quiet unless asked.
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'off' };
  const child = spawn(command, args, { cwd: repoRoot, env, stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  const lines = createInterface({ input: child.stdout });
  const first = new Promise((resolve, reject) => {
    lines.once('line', resolve);
    child.once('error', reject);
    exited.then((code) => reject(new Error(`peer exited (${code}) before printing its address`)));
  });
  const line = /** @type {string} */ (await within(first, `${command} to print its address`));
  const { url, no_sessions_url: noSessionsUrl } = JSON.parse(line);
  return {
    url,
    noSessionsUrl,
    exited,
    stop: async () => {
      child.stdin.end();
      await within(exited, 'the peer to exit');
    },
  };
}

/** The clients' options against the peer: fast reconnects, so a restart costs the tests milliseconds. */
export const PEER_OPTIONS = { WebSocket, reconnect: { minDelay: 10, maxDelay: 100 }, requestTimeout: 5000 };

/**
 * For a `describe` against examples/peer: starts it before the suite's tests and, after
 * them, closes every client in `clients` and stops it. `peer()` is the running peer;
 * `open(options, url)` connects a client (bounded) with `PEER_OPTIONS` and `options`, to
 * the peer's `url` unless another is given, and adds it to `clients`.
 */
export function peerSuite() {
  /** @type {Awaited<ReturnType<typeof startPeer>>} */
  let peer;
  /** @type {import('../../webwire.js').WebWireClient[]} */
  const clients = [];
  before(async () => {
    peer = await startPeer();
  });
  after(async () => {
    for (const client of clients) client.close();
    await peer.stop();
  });
  const open = async (options = {}, url = peer.url) => {
    const client = await within(connect(url, { ...PEER_OPTIONS, ...options }), 'connect');
    clients.push(client);
    return client;
  };
  return { peer: () => peer, open, clients };
}

/** AcceptConf bytes. @param {number} readTimeout @param {number} size @param {number} [major] */
export function acceptConf(readTimeout = 60_000, size = 8192, major = 2) {
  const frame = Buffer.alloc(11);
  frame[0] = 0x17;
  frame[1] = major;
  frame.writeUInt32LE(readTimeout, 3);
  frame.writeUInt32LE(size, 7);
  return frame;
}

/**
 * A WebSocket server on 127.0.0.1 that the test scripts: `onConnection(socket)` for each
 * client (a `ws` socket; received frames arrive as Buffers).
 * @param {(socket: import('ws').WebSocket) => void} onConnection
 */
export async function fakeServer(onConnection) {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  server.on('connection', onConnection);
  await within(new Promise((resolve) => server.once('listening', resolve)), 'the fake server to listen');
  const { port } = /** @type {import('node:net').AddressInfo} */ (server.address());
  return {
    url: `ws://127.0.0.1:${port}/`,
    clients: () => [...server.clients],
    close: () => new Promise((resolve) => {
      for (const client of server.clients) client.terminate();
      server.close(() => resolve(undefined));
    }),
  };
}

/**
 * Runs `body` against a `fakeServer` scripted by `onConnection`, then closes the server,
 * whether `body` passed or threw.
 * @template T
 * @param {(socket: import('ws').WebSocket) => void} onConnection
 * @param {(server: Awaited<ReturnType<typeof fakeServer>>) => Promise<T>} body
 * @returns {Promise<T>}
 */
export async function withFakeServer(onConnection, body) {
  const server = await fakeServer(onConnection);
  try {
    return await body(server);
  } finally {
    await server.close();
  }
}
