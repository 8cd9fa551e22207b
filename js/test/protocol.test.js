// The client against a scripted fake server: what a correct server never sends (frames
// that do not parse, text, a wrong handshake) and what the wire must carry (ids, heartbeats).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';

import { DisconnectedError, ProtocolError, TimeoutError, WebWireClient, connect } from '../webwire.js';
import { acceptConf, fakeServer, nextEvent, within } from './support/helpers.js';

const OPTIONS = { WebSocket, reconnect: false, requestTimeout: 5000 };

/** The next frame the fake server receives on `socket`. */
const nextFrame = (socket) => within(new Promise((resolve) => socket.once('message', resolve)), 'a frame');

test('a frame that does not parse closes the connection with a protocol error', async () => {
  let closeCode;
  const closed = new Promise((resolve) => {
    closeCode = resolve;
  });
  const server = await fakeServer((socket) => {
    socket.send(acceptConf());
    // Answer the first request with type 6, the v1.x protocol-error reply v2.0 dropped.
    socket.once('message', (frame) => socket.send(Buffer.from([0x06, ...frame.subarray(1, 9)])));
    socket.once('close', (code) => closeCode(code));
  });
  try {
    const client = await within(connect(server.url, OPTIONS), 'connect');
    const gone = nextEvent(client, 'disconnect');
    const error = await within(client.request('x', 'y').catch((e) => e), 'the request to fail');
    assert.ok(error instanceof ProtocolError, String(error));
    assert.equal(error.kind, 'protocol');
    assert.match(error.message, /unknown message type 6/);
    assert.ok((await gone).detail.error instanceof ProtocolError);
    assert.equal(await within(closed, 'the close'), 1002);
    assert.equal(client.connected, false);
  } finally {
    await server.close();
  }
});

test('a text message is a protocol error too', async () => {
  const server = await fakeServer((socket) => {
    socket.send(acceptConf());
    socket.once('message', () => socket.send('{"not": "binary"}'));
  });
  try {
    const client = await within(connect(server.url, OPTIONS), 'connect');
    const error = await within(client.request('x', 'y').catch((e) => e), 'the request to fail');
    assert.ok(error instanceof ProtocolError);
  } finally {
    await server.close();
  }
});

test('the handshake: another major version, another sub-protocol or no AcceptConf fail the connect', async () => {
  const cases = [
    [acceptConf(60_000, 8192, 3), /protocol version 3/],
    [Buffer.concat([acceptConf(), Buffer.from('chat')]), /sub-protocol "chat"/],
    [Buffer.from([0x21]), /expected AcceptConf/],
    [Buffer.from([0x17, 2, 0]), /AcceptConf/],
  ];
  for (const [first, message] of cases) {
    const server = await fakeServer((socket) => socket.send(first));
    try {
      const error = await within(connect(server.url, OPTIONS).catch((e) => e), 'connect to fail');
      assert.ok(error instanceof ProtocolError, String(error));
      assert.match(error.message, message);
    } finally {
      await server.close();
    }
  }
  // With the expected sub-protocol the same handshake is accepted.
  const server = await fakeServer((socket) => socket.send(Buffer.concat([acceptConf(), Buffer.from('chat')])));
  try {
    const client = await within(connect(server.url, { ...OPTIONS, subProtocol: 'chat' }), 'connect');
    assert.ok(client.connected);
    client.close();
  } finally {
    await server.close();
  }
});

test('a connection lost with a request in flight rejects it as disconnected', async () => {
  const server = await fakeServer((socket) => {
    socket.send(acceptConf());
    socket.once('message', () => socket.terminate());
  });
  try {
    const client = await within(connect(server.url, OPTIONS), 'connect');
    const error = await within(client.request('x', 'y').catch((e) => e), 'the request to fail');
    assert.ok(error instanceof DisconnectedError);
    assert.equal(error.kind, 'disconnected');
  } finally {
    await server.close();
  }
});

test('each client has its own id counter from 1, written as u64 little-endian', async () => {
  const ids = [];
  const server = await fakeServer((socket) => {
    socket.send(acceptConf());
    socket.on('message', (frame) => {
      ids.push(frame.subarray(1, 9).toString('hex'));
      // ReplyUtf16 with padding byte and "ok": decoded from the payload only.
      socket.send(Buffer.from([0xc1, ...frame.subarray(1, 9), 0, 0x6f, 0, 0x6b, 0]));
    });
  });
  try {
    const a = await within(connect(server.url, OPTIONS), 'connect a');
    const b = await within(connect(server.url, OPTIONS), 'connect b');
    assert.equal((await a.request('n', 'x')).text(), 'ok');
    assert.equal((await b.request('n', 'x')).text(), 'ok');
    // An infinite timeout waits (a timer of Infinity ms would fire at once).
    assert.equal((await a.request('n', 'x', { timeout: Infinity })).text(), 'ok');
    assert.deepEqual(ids, ['0100000000000000', '0100000000000000', '0200000000000000']);
    a.close();
    b.close();
  } finally {
    await server.close();
  }
});

test('heartbeats are sent at 75 % of the advertised read timeout, and only then', async () => {
  let connectedAt = 0;
  const frames = [];
  let heartbeat;
  const beat = new Promise((resolve) => {
    heartbeat = resolve;
  });
  const server = await fakeServer((socket) => {
    socket.send(acceptConf(200));
    connectedAt = performance.now();
    socket.on('message', (frame) => {
      frames.push(frame);
      if (frame.length === 1 && frame[0] === 0x21) heartbeat(performance.now() - connectedAt);
    });
  });
  try {
    const client = await within(connect(server.url, OPTIONS), 'connect');
    assert.equal(client.heartbeatPeriod, 150);
    const after = await within(beat, 'a heartbeat');
    // Not before the period (timers never fire early); a NaN period would fire at once.
    assert.ok(after >= 140, `heartbeat after ${after} ms`);
    assert.equal(frames.length, 1);
    client.close();
  } finally {
    await server.close();
  }
});

test('a server that never answers the handshake fails the connect within connectTimeout', async () => {
  const server = await fakeServer(() => {});
  try {
    const client = new WebWireClient(server.url, { ...OPTIONS, autoconnect: false, connectTimeout: 100 });
    const error = await within(client.connect().catch((e) => e), 'connect to fail');
    assert.ok(error instanceof DisconnectedError);
    assert.match(error.message, /no handshake/);
  } finally {
    await server.close();
  }
});

test('read timeouts of 0 and of 2^32-1 ms give no heartbeat and a clamped period, not a flood', async () => {
  for (const [readTimeout, period] of [
    [0, 0],
    [0xffffffff, 2 ** 31 - 1],
  ]) {
    const server = await fakeServer((socket) => socket.send(acceptConf(readTimeout)));
    try {
      const client = await within(connect(server.url, OPTIONS), 'connect');
      assert.equal(client.heartbeatPeriod, period);
      client.close();
    } finally {
      await server.close();
    }
  }
});

test('server signals webwire-js got wrong arrive intact (named without payload, UTF-16 padded)', async () => {
  const frames = ['400161', '41036162630068006900', '41004100', '3f056576656e74010203'];
  const server = await fakeServer((socket) => {
    socket.send(acceptConf());
    // After the client's first message, so that its listener is in place.
    socket.once('message', () => frames.forEach((hex) => socket.send(Buffer.from(hex, 'hex'))));
  });
  try {
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
  } finally {
    await server.close();
  }
});

test('replies for unknown ids are ignored; the right one still resolves', async () => {
  const server = await fakeServer((socket) => {
    socket.send(acceptConf());
    socket.on('message', (frame) => {
      socket.send(Buffer.from('c0ffffffffffffffff7374726179', 'hex')); // id nobody used
      socket.send(Buffer.from([0xc0, ...frame.subarray(1, 9), 0x6f, 0x6b]));
    });
  });
  try {
    const client = await within(connect(server.url, OPTIONS), 'connect');
    assert.equal((await within(client.request('n', 'x'), 'reply')).text(), 'ok');
    assert.ok(client.connected);
    client.close();
  } finally {
    await server.close();
  }
});

test('while reconnecting, requests wait up to their timeout; attempts back off', async () => {
  const attempts = [];
  let fifth;
  const fiveAttempts = new Promise((resolve) => {
    fifth = resolve;
  });
  let refuse = false;
  const server = await fakeServer((socket) => {
    attempts.push(performance.now());
    if (attempts.length === 5) fifth(undefined);
    // After the first connection, every attempt is dropped before the handshake.
    if (refuse) socket.terminate();
    else socket.send(acceptConf());
  });
  try {
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
  } finally {
    await server.close();
  }
});
