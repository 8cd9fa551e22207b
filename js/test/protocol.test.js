// The client against a scripted fake server: what a correct server never sends (frames
// that do not parse, text, a wrong handshake) and what the wire must carry (ids, heartbeats).

import { mock, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import WebSocket from 'ws';

import { DisconnectedError, ProtocolError, TimeoutError, WebWireClient, connect } from '../webwire.js';
import { acceptConf, fakeServer, nextEvent, withFakeServer, within } from './support/helpers.js';
import { repoRoot } from './support/shared.js';

const OPTIONS = { WebSocket, reconnect: false, requestTimeout: 5000 };

/** A promise, and the function that resolves it. */
function deferred() {
  let resolve;
  const promise = new Promise((settle) => {
    resolve = settle;
  });
  return { promise, resolve };
}

/** The next frame the fake server receives on `socket`. */
const nextFrame = (socket) => within(new Promise((resolve) => socket.once('message', resolve)), 'a frame');

test('a frame that does not parse closes the connection with a protocol error', async () => {
  const { promise: closed, resolve: closeCode } = deferred();
  await withFakeServer((socket) => {
    socket.send(acceptConf());
    // Answer the first request with type 6, the v1.x protocol-error reply v2.0 dropped.
    socket.once('message', (frame) => socket.send(Buffer.from([0x06, ...frame.subarray(1, 9)])));
    socket.once('close', (code) => closeCode(code));
  }, async (server) => {
    const client = await within(connect(server.url, OPTIONS), 'connect');
    const gone = nextEvent(client, 'disconnect');
    const error = await within(client.request('x', 'y').catch((e) => e), 'the request to fail');
    assert.ok(error instanceof ProtocolError, String(error));
    assert.equal(error.kind, 'protocol');
    assert.match(error.message, /unknown message type 6/);
    assert.ok((await gone).detail.error instanceof ProtocolError);
    assert.equal(await within(closed, 'the close'), 1002);
    assert.equal(client.connected, false);
  });
});

test('a text message is a protocol error too', async () => {
  await withFakeServer((socket) => {
    socket.send(acceptConf());
    socket.once('message', () => socket.send('{"not": "binary"}'));
  }, async (server) => {
    const client = await within(connect(server.url, OPTIONS), 'connect');
    const error = await within(client.request('x', 'y').catch((e) => e), 'the request to fail');
    assert.ok(error instanceof ProtocolError);
  });
});

test('the handshake: another major version, another sub-protocol or no AcceptConf fail the connect', async () => {
  const cases = [
    [acceptConf(60_000, 8192, 3), /protocol version 3/],
    [Buffer.concat([acceptConf(), Buffer.from('chat')]), /sub-protocol "chat"/],
    [Buffer.from([0x21]), /expected AcceptConf/],
    [Buffer.from([0x17, 2, 0]), /AcceptConf/],
  ];
  for (const [first, message] of cases) {
    await withFakeServer((socket) => socket.send(first), async (server) => {
      const error = await within(connect(server.url, OPTIONS).catch((e) => e), 'connect to fail');
      assert.ok(error instanceof ProtocolError, String(error));
      assert.match(error.message, message);
    });
  }
  // With the expected sub-protocol the same handshake is accepted.
  await withFakeServer((socket) => socket.send(Buffer.concat([acceptConf(), Buffer.from('chat')])), async (server) => {
    const client = await within(connect(server.url, { ...OPTIONS, subProtocol: 'chat' }), 'connect');
    assert.ok(client.connected);
    client.close();
  });
});

test('a connection lost with a request in flight rejects it as disconnected', async () => {
  await withFakeServer((socket) => {
    socket.send(acceptConf());
    socket.once('message', () => socket.terminate());
  }, async (server) => {
    const client = await within(connect(server.url, OPTIONS), 'connect');
    const error = await within(client.request('x', 'y').catch((e) => e), 'the request to fail');
    assert.ok(error instanceof DisconnectedError);
    assert.equal(error.kind, 'disconnected');
  });
});

test('each client has its own id counter from 1, written as u64 little-endian', async () => {
  const ids = [];
  await withFakeServer((socket) => {
    socket.send(acceptConf());
    socket.on('message', (frame) => {
      ids.push(frame.subarray(1, 9).toString('hex'));
      // ReplyUtf16 with padding byte and "ok": decoded from the payload only.
      socket.send(Buffer.from([0xc1, ...frame.subarray(1, 9), 0, 0x6f, 0, 0x6b, 0]));
    });
  }, async (server) => {
    const a = await within(connect(server.url, OPTIONS), 'connect a');
    const b = await within(connect(server.url, OPTIONS), 'connect b');
    assert.equal((await a.request('n', 'x')).text(), 'ok');
    assert.equal((await b.request('n', 'x')).text(), 'ok');
    // An infinite timeout waits (a timer of Infinity ms would fire at once).
    assert.equal((await a.request('n', 'x', { timeout: Infinity })).text(), 'ok');
    assert.deepEqual(ids, ['0100000000000000', '0100000000000000', '0200000000000000']);
    a.close();
    b.close();
  });
});

test('heartbeats are sent at 75 % of the advertised read timeout, and only then', async () => {
  let connectedAt = 0;
  const frames = [];
  const { promise: beat, resolve: heartbeat } = deferred();
  await withFakeServer((socket) => {
    socket.send(acceptConf(200));
    connectedAt = performance.now();
    socket.on('message', (frame) => {
      frames.push(frame);
      if (frame.length === 1 && frame[0] === 0x21) heartbeat(performance.now() - connectedAt);
    });
  }, async (server) => {
    const client = await within(connect(server.url, OPTIONS), 'connect');
    assert.equal(client.heartbeatPeriod, 150);
    const after = await within(beat, 'a heartbeat');
    // Not before the period (timers never fire early); a NaN period would fire at once.
    assert.ok(after >= 140, `heartbeat after ${after} ms`);
    assert.equal(frames.length, 1);
    client.close();
  });
});

test('a server that never answers the handshake fails the connect within connectTimeout', async () => {
  await withFakeServer(() => {}, async (server) => {
    const client = new WebWireClient(server.url, { ...OPTIONS, autoconnect: false, connectTimeout: 100 });
    const error = await within(client.connect().catch((e) => e), 'connect to fail');
    assert.ok(error instanceof DisconnectedError);
    assert.match(error.message, /no handshake/);
  });
});

test('read timeouts of 0 and of 2^32-1 ms give no heartbeat and a clamped period, not a flood', async () => {
  for (const [readTimeout, period] of [
    [0, 0],
    [0xffffffff, 2 ** 31 - 1],
  ]) {
    await withFakeServer((socket) => socket.send(acceptConf(readTimeout)), async (server) => {
      const client = await within(connect(server.url, OPTIONS), 'connect');
      assert.equal(client.heartbeatPeriod, period);
      client.close();
    });
  }
});

test('server signals webwire-js got wrong arrive intact (named without payload, UTF-16 padded)', async () => {
  const frames = ['400161', '41036162630068006900', '41004100', '3f056576656e74010203'];
  await withFakeServer((socket) => {
    socket.send(acceptConf());
    // After the client's first message, so that its listener is in place.
    socket.once('message', () => frames.forEach((hex) => socket.send(Buffer.from(hex, 'hex'))));
  }, async (server) => {
    const client = await within(connect(server.url, OPTIONS), 'connect');
    const received = [];
    const all = within(
      new Promise((resolve) =>
        client.on('signal', ({ detail }) => {
          received.push([detail.name, detail.payload.encoding, detail.payload.text()]);
          if (received.length === frames.length) resolve(undefined);
        }),
      ),
      'four signals',
    );
    await client.signal('go', '');
    await all;
    assert.deepEqual(received, [
      ['a', 'utf8', ''],
      ['abc', 'utf16', 'hi'],
      ['', 'utf16', 'A'],
      ['event', 'binary', '\x01\x02\x03'],
    ]);
    client.close();
  });
});

test('replies for unknown ids are ignored; the right one still resolves', async () => {
  await withFakeServer((socket) => {
    socket.send(acceptConf());
    socket.on('message', (frame) => {
      socket.send(Buffer.from('c0ffffffffffffffff7374726179', 'hex')); // id nobody used
      socket.send(Buffer.from([0xc0, ...frame.subarray(1, 9), 0x6f, 0x6b]));
    });
  }, async (server) => {
    const client = await within(connect(server.url, OPTIONS), 'connect');
    assert.equal((await within(client.request('n', 'x'), 'reply')).text(), 'ok');
    assert.ok(client.connected);
    client.close();
  });
});

test('while reconnecting, requests wait up to their timeout; attempts back off', async () => {
  const attempts = [];
  const { promise: fiveAttempts, resolve: fifth } = deferred();
  let refuse = false;
  await withFakeServer((socket) => {
    attempts.push(performance.now());
    if (attempts.length === 5) fifth(undefined);
    // After the first connection, every attempt is dropped before the handshake.
    if (refuse) socket.terminate();
    else socket.send(acceptConf());
  }, async (server) => {
    const client = await within(
      connect(server.url, { ...OPTIONS, reconnect: { minDelay: 40, maxDelay: 160 } }),
      'connect',
    );
    refuse = true;
    const gone = nextEvent(client, 'disconnect');
    for (const socket of server.clients()) socket.terminate();
    assert.equal((await gone).detail.reconnecting, true);
    const waited = await within(client.request('n', 'x', { timeout: 100 }).catch((e) => e), 'the timeout');
    assert.ok(waited instanceof TimeoutError, String(waited));
    // The first connection and four attempts after the loss. The delays before attempts
    // 2-4 have ceilings of 80, 160 and 160 ms and are at least half of them (the other
    // half is random): never back to back.
    await within(fiveAttempts, 'four reconnect attempts');
    client.close();
    const gaps = [attempts[2] - attempts[1], attempts[3] - attempts[2], attempts[4] - attempts[3]];
    for (const [i, floor] of [40, 80, 80].entries()) {
      // Less a millisecond: timers round their delay.
      assert.ok(gaps[i] >= floor - 1, `attempt ${i + 3} came ${gaps[i]} ms after the one before`);
    }
  });
});

/** A memory Storage holding the session key `key` for `url`, as the client stores it. */
function storageWith(url, key) {
  const items = new Map([[`webwire-session:${url}`, JSON.stringify({ session: key })]]);
  return {
    getItem: (k) => items.get(k) ?? null,
    setItem: (k, v) => void items.set(k, String(v)),
    removeItem: (k) => void items.delete(k),
    items,
  };
}

/** A reply (UTF-8) to `frame` (a request) carrying `text`. */
const replyTo = (frame, text) => Buffer.concat([Buffer.from([0xc0]), frame.subarray(1, 9), Buffer.from(text)]);

/** The name of a signal or request frame as the fake server receives it. */
function nameOf(frame) {
  const at = frame[0] >= 0x7f ? 9 : 1;
  return frame.subarray(at + 1, at + 1 + frame[at]).toString();
}

/**
 * Runs `body` with setTimeout recording every delay it is given (the client looks the
 * global up at each call); resolves with the delays.
 */
async function recordingTimers(body) {
  const delays = [];
  const original = globalThis.setTimeout;
  globalThis.setTimeout = /** @type {any} */ ((fn, ms, ...rest) => {
    delays.push(ms);
    return original(fn, ms, ...rest);
  });
  try {
    await body();
  } finally {
    globalThis.setTimeout = original;
  }
  return delays;
}

const MAX_TIMER_MS = 2 ** 31 - 1;

test('close() while connecting, then connect(): a fresh attempt connects (React StrictMode)', async () => {
  await withFakeServer((socket) => socket.send(acceptConf()), async (server) => {
    const client = new WebWireClient(server.url, { WebSocket, reconnect: false });
    assert.equal(client.state, 'connecting');
    client.close();
    assert.equal(client.state, 'closed');
    await within(client.connect(), 'connect after close');
    assert.equal(client.state, 'connected');
    client.close();
  });
});

test('the connect() helper closes the client when the first attempt fails: no retries', async (t) => {
  // A WebSocket that fails every attempt before the handshake, and counts them.
  let constructed = 0;
  class FailingSocket {
    constructor() {
      constructed++;
      queueMicrotask(() => this.onclose?.({ code: 1006, reason: '' }));
    }
    send() {}
    close() {}
  }
  t.mock.timers.enable({ apis: ['setTimeout'] });
  const error = await connect('ws://127.0.0.1:9/', { WebSocket: FailingSocket, reconnect: { minDelay: 10, maxDelay: 20 } }).catch((e) => e);
  assert.ok(error instanceof DisconnectedError, String(error));
  assert.equal(constructed, 1);
  // A retry still scheduled would run now and construct another socket.
  t.mock.timers.runAll();
  assert.equal(constructed, 1);
});

test('a restore reply whose session does not parse is a failed restore: key forgotten, still connected', async () => {
  let connections = 0;
  await withFakeServer((socket) => {
    connections++;
    socket.send(acceptConf());
    socket.on('message', (frame) => {
      // The restore reply lacks the session's times ("l"); other requests get "ok".
      if (frame[0] === 0x20) socket.send(replyTo(frame, '{"k":"abc","c":"2019-01-04T21:19:06Z"}'));
      else socket.send(replyTo(frame, 'ok'));
    });
  }, async (server) => {
    const storage = storageWith(server.url, 'abc');
    const client = new WebWireClient(server.url, {
      WebSocket,
      persistSession: storage,
      reconnect: { minDelay: 10, maxDelay: 20 },
      requestTimeout: 5000,
    });
    const closed = nextEvent(client, 'sessionclosed');
    const lost = [];
    client.on('disconnect', ({ detail }) => lost.push(detail.error));
    assert.equal((await within(client.request('x', 'y'), 'the queued request')).text(), 'ok');
    assert.equal((await closed).detail.reason, 'restore-failed');
    assert.equal(storage.items.size, 0);
    assert.equal(client.session, null);
    assert.ok(client.connected);
    assert.equal(connections, 1);
    assert.deepEqual(lost, []);
    client.close();
  });
});

test('messages waiting for the connection go out before what a connect listener sends', async () => {
  const names = [];
  const { promise: two, resolve: both } = deferred();
  await withFakeServer((socket) => {
    socket.send(acceptConf());
    socket.on('message', (frame) => {
      names.push(nameOf(frame));
      if (names.length === 2) both(undefined);
    });
  }, async (server) => {
    const client = new WebWireClient(server.url, OPTIONS);
    client.on('connect', () => void client.signal('fromlistener', 'x'));
    const queued = client.signal('queued', 'x');
    await within(queued, 'the queued signal');
    await within(two, 'two signals');
    assert.deepEqual(names, ['queued', 'fromlistener']);
    client.close();
  });
});

test('connectTimeout Infinity starts no timer: the connect succeeds', async () => {
  await withFakeServer((socket) => socket.send(acceptConf()), async (server) => {
    const delays = await recordingTimers(async () => {
      const client = new WebWireClient(server.url, { ...OPTIONS, autoconnect: false, connectTimeout: Infinity });
      await within(client.connect(), 'connect');
      client.close();
    });
    // A timer of Infinity ms fires at once (Node and browsers): none may be asked for.
    assert.ok(delays.every((ms) => Number.isFinite(ms) && ms <= MAX_TIMER_MS), `delays ${delays}`);
  });
});

test('reconnect delays beyond the longest timer are clamped, not turned into a tight loop', async () => {
  await withFakeServer((socket) => socket.send(acceptConf()), async (server) => {
    const delays = await recordingTimers(async () => {
      const client = await within(
        connect(server.url, { ...OPTIONS, reconnect: { minDelay: 2 ** 32, maxDelay: 2 ** 33 } }),
        'connect',
      );
      const gone = nextEvent(client, 'disconnect');
      for (const socket of server.clients()) socket.terminate();
      assert.equal((await gone).detail.reconnecting, true);
      assert.equal(client.state, 'reconnecting');
      client.close();
    });
    assert.ok(delays.every((ms) => ms === undefined || (Number.isFinite(ms) && ms <= MAX_TIMER_MS)), `delays ${delays}`);
    // The retry waits between half the (clamped) ceiling and all of it.
    assert.ok(delays.some((ms) => ms >= MAX_TIMER_MS / 2), `no long retry delay among ${delays}`);
  });
});

test('timeouts must be numbers >= 0 or Infinity: NaN, negative and strings are TypeErrors', async () => {
  const client = new WebWireClient('ws://127.0.0.1:9/', { WebSocket, autoconnect: false });
  for (const timeout of [NaN, -1, '5']) {
    const error = await within(client.request('x', 'y', { timeout }).catch((e) => e), `timeout ${timeout}`);
    assert.ok(error instanceof TypeError, `timeout ${timeout}: ${error}`);
    const signalError = await within(client.signal('x', 'y', { timeout }).catch((e) => e), `signal timeout ${timeout}`);
    assert.ok(signalError instanceof TypeError, `signal timeout ${timeout}: ${signalError}`);
  }
  assert.throws(() => new WebWireClient('ws://127.0.0.1:9/', { WebSocket, requestTimeout: NaN }), TypeError);
  assert.throws(() => new WebWireClient('ws://127.0.0.1:9/', { WebSocket, connectTimeout: -5 }), TypeError);
});

test('a WebSocket constructor that throws fails connect() with its error, without retrying', async () => {
  let constructed = 0;
  const refusal = new DOMException('port blocked', 'SecurityError');
  class RefusingSocket {
    constructor() {
      constructed++;
      throw refusal;
    }
  }
  const options = { WebSocket: RefusingSocket, reconnect: { minDelay: 10, maxDelay: 20 } };
  const client = new WebWireClient('ws://127.0.0.1:9/', { ...options, autoconnect: false });
  assert.equal(await within(client.connect().catch((e) => e), 'connect to fail'), refusal);
  assert.equal(client.state, 'idle');
  assert.equal(constructed, 1);
  // With autoconnect too: the constructor's attempt fails and none follows.
  const auto = new WebWireClient('ws://127.0.0.1:9/', options);
  assert.equal(await within(auto.connect().catch((e) => e), 'connect to fail'), refusal);
  assert.equal(auto.state, 'idle');
  const queued = await within(auto.request('x', 'y').catch((e) => e), 'a request to fail');
  assert.ok(queued instanceof DisconnectedError, String(queued));
  assert.equal(auto.state, 'idle');
});

test('errors name the URL without its credentials: no userinfo, no query', async () => {
  class RefusingSocket {
    constructor() {
      throw new DOMException('port blocked', 'SecurityError');
    }
  }
  // Connecting by itself, the client queues the request and dials: refused, it fails it.
  const client = new WebWireClient('ws://alice:s3cret@127.0.0.1:9/ws?token=s3cret#s3cret', { WebSocket: RefusingSocket });
  await within(client.connect().catch((e) => e), 'the first attempt to fail');
  const error = await within(client.request('x', 'y', { timeout: 1000 }).catch((e) => e), 'the request to fail');
  assert.ok(error instanceof DisconnectedError, String(error));
  assert.ok(!error.message.includes('s3cret'), error.message);
  assert.equal(error.message, 'cannot connect to ws://<redacted>@127.0.0.1:9/ws?<redacted>');
});

test('autoconnect off: a failed connect() leaves the client idle, no retries in the background', async () => {
  let connections = 0;
  await withFakeServer((socket) => {
    connections++;
    socket.terminate();
  }, async (server) => {
    const client = new WebWireClient(server.url, { WebSocket, autoconnect: false, reconnect: { minDelay: 10, maxDelay: 20 } });
    const error = await within(client.connect().catch((e) => e), 'connect to fail');
    assert.ok(error instanceof DisconnectedError, String(error));
    assert.equal(client.state, 'idle');
    assert.equal(connections, 1);
  });
});

test('the sub-protocol is compared as bytes: invalid UTF-8 does not pass for U+FFFD', async () => {
  await withFakeServer((socket) => socket.send(Buffer.concat([acceptConf(), Buffer.from([0xff])])), async (server) => {
    const error = await within(connect(server.url, { ...OPTIONS, subProtocol: '\uFFFD' }).catch((e) => e), 'connect to fail');
    assert.ok(error instanceof ProtocolError, String(error));
    assert.match(error.message, /sub-protocol/);
  });
  await withFakeServer((socket) => socket.send(Buffer.concat([acceptConf(), Buffer.from('\uFFFD')])), async (exact) => {
    const client = await within(connect(exact.url, { ...OPTIONS, subProtocol: '\uFFFD' }), 'connect');
    assert.ok(client.connected);
    client.close();
  });
});

test('restoreSession checks for an active session again when it is sent', async () => {
  const restores = [];
  const session = (key) => JSON.stringify({ k: key, c: '2019-01-04T21:19:06Z', l: '2019-01-04T21:19:06Z', i: {} });
  await withFakeServer((socket) => {
    socket.send(acceptConf());
    socket.on('message', (frame) => {
      if (frame[0] !== 0x20) return;
      const key = frame.subarray(9).toString();
      restores.push(key);
      socket.send(replyTo(frame, session(key)));
    });
  }, async (server) => {
    // The client restores its stored key after connecting; the application's restore,
    // made before that, waits for it and finds a session active by then.
    const client = new WebWireClient(server.url, { ...OPTIONS, persistSession: storageWith(server.url, 'stored') });
    assert.equal(client.session, null);
    const error = await within(client.restoreSession('other').catch((e) => e), 'the restore to fail');
    assert.equal(error.kind, 'session_active', String(error));
    assert.equal(client.session?.key, 'stored');
    assert.deepEqual(restores, ['stored']);
    client.close();
  });
});

test('a late reply to a timed-out restoreSession or closeSession applies, unless a newer session came first', async () => {
  const session = (key) => Buffer.from(JSON.stringify({ k: key, c: '2019-01-04T21:19:06Z', l: '2019-01-04T21:19:06Z' }));
  const created = (key) => Buffer.concat([Buffer.from([0x15]), session(key)]);
  const closeReply = (frame) => Buffer.concat([Buffer.from([0xbf]), frame.subarray(1, 9)]);
  // SignalUtf8 "sync": everything the server sent before it has been handled once it arrives.
  const sync = Buffer.from([0x40, 4, ...Buffer.from('sync')]);
  const { promise: accepted, resolve: accept } = deferred();
  await withFakeServer((socket) => {
    socket.send(acceptConf());
    accept(socket);
  }, async (server) => {
    const client = await within(connect(server.url, OPTIONS), 'connect');
    const socket = await within(accepted, 'the connection');
    const seen = [];
    client.on('sessioncreated', ({ detail }) => seen.push(`created ${detail.session.key}`));
    client.on('sessionclosed', ({ detail }) => seen.push(`closed ${detail.reason}`));
    const settle = async () => {
      const synced = nextEvent(client, 'signal');
      socket.send(sync);
      await synced;
    };
    const timingOut = async (call, what) => {
      const frame = nextFrame(socket);
      const error = await within(call().catch((e) => e), what);
      assert.ok(error instanceof TimeoutError, String(error));
      return frame;
    };

    // Nothing newer in between: the server's late answer is applied, page and server agree.
    const restore = await timingOut(() => client.restoreSession('first', { timeout: 50 }), 'the restore to time out');
    assert.equal(client.session, null);
    socket.send(replyTo(restore, session('first')));
    await settle();
    assert.equal(client.session?.key, 'first');
    const close = await timingOut(() => client.closeSession({ timeout: 50 }), 'the close to time out');
    assert.equal(close[0], 0x1f);
    assert.equal(client.session?.key, 'first', 'kept until the server confirms');
    socket.send(closeReply(close));
    await settle();
    assert.equal(client.session, null);
    assert.deepEqual(seen, ['created first', 'closed closed']);

    // A newer session before the late answer: the answer is ignored.
    seen.length = 0;
    const stale = await timingOut(() => client.restoreSession('stale', { timeout: 50 }), 'the restore to time out');
    socket.send(created('fresh'));
    socket.send(replyTo(stale, session('stale')));
    await settle();
    assert.equal(client.session?.key, 'fresh');
    const staleClose = await timingOut(() => client.closeSession({ timeout: 50 }), 'the close to time out');
    socket.send(created('newest'));
    socket.send(closeReply(staleClose));
    await settle();
    assert.equal(client.session?.key, 'newest');
    assert.deepEqual(seen, ['created fresh', 'created newest']);
    client.close();
  });
});

test('reconnect delays have a floor: a negative, NaN or tiny minDelay cannot retry in a busy loop', async () => {
  for (const reconnect of [{ minDelay: -1000 }, { minDelay: Number.NaN }, { minDelay: '5' }, { maxDelay: -1 }]) {
    assert.throws(() => new WebWireClient('ws://127.0.0.1:9/', { WebSocket, autoconnect: false, reconnect }), TypeError, JSON.stringify(reconnect));
  }
  // Every attempt is refused at once; the delay the client waits before the next one is
  // taken from its timer.
  class Refused {
    constructor() {
      queueMicrotask(() => this.onclose?.({ code: 1006, reason: '' }));
    }
    close() {}
  }
  for (const minDelay of [0, 0.001, 1]) {
    const delays = await recordingTimers(async () => {
      const client = new WebWireClient('ws://127.0.0.1:9/', { WebSocket: Refused, connectTimeout: Infinity, reconnect: { minDelay, maxDelay: 10 } });
      await new Promise((resolve) => setImmediate(resolve));
      client.close();
    });
    assert.equal(delays.length, 1, `one retry scheduled: ${delays}`);
    // Half of the delay is fixed: at least half the 10 ms floor.
    assert.ok(delays[0] >= 5 && delays[0] <= 10, `minDelay ${minDelay}: waits ${delays[0]} ms`);
  }
});

test('under Node, a client retrying in the background does not keep the process alive', async () => {
  // A port nothing listens on: every attempt is refused, and the client waits to retry.
  const gone = await fakeServer(() => {});
  const url = gone.url;
  await gone.close();
  const script = `
    import WebSocket from ${JSON.stringify(pathToFileURL(join(repoRoot, 'js', 'node_modules', 'ws', 'wrapper.mjs')).href)};
    import { WebWireClient } from ${JSON.stringify(pathToFileURL(join(repoRoot, 'js', 'webwire.js')).href)};
    const client = new WebWireClient(${JSON.stringify(url)}, { WebSocket, reconnect: { minDelay: 50, maxDelay: 100 } });
    client.on('disconnect', () => {});
    // close() is forgotten.
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'ignore', 'inherit'] });
  const exited = new Promise((resolve) => child.once('exit', (code) => resolve(code)));
  try {
    assert.equal(await within(exited, 'the script to exit'), 0);
  } finally {
    child.kill();
  }
});
