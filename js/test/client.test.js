// The client against the Rust server of examples/peer: every flow a page relies on.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import {
  AbortError,
  CodecError,
  DisconnectedError,
  InternalError,
  LimitError,
  MaxSessionConnectionsError,
  Payload,
  ProtocolError,
  ReplyError,
  SessionNotFoundError,
  SessionsDisabledError,
  ShutdownError,
  TimeoutError,
  WebWireClient,
  WebWireError,
  connect,
} from '../webwire.js';
import { PEER_OPTIONS as OPTIONS, nextEvent, peerSuite, startPeer, within } from './support/helpers.js';

/** A Storage-like object in memory, standing in for localStorage. */
function memoryStorage() {
  const items = new Map();
  return {
    getItem: (key) => items.get(key) ?? null,
    setItem: (key, value) => void items.set(key, String(value)),
    removeItem: (key) => void items.delete(key),
    items,
  };
}

/** Rejects with the error `promise` rejects with (bounded); fails if it resolves. */
async function rejection(promise, what) {
  try {
    await within(promise, what);
  } catch (error) {
    return error;
  }
  assert.fail(`${what} resolved`);
}

describe('the client against examples/peer', () => {
  const { peer, open, clients } = peerSuite();

  test('the handshake sets the heartbeat to 75 % of the read timeout and the size limit', async () => {
    const client = await open();
    assert.equal(client.state, 'connected');
    assert.equal(client.heartbeatPeriod, 1500);
    assert.equal(client.messageSizeLimit, 1024);
  });

  test('payloads travel in each encoding: strings UTF-8, bytes binary, UTF-16 on request', async () => {
    const client = await open();
    const described = async (payload, options) => (await client.request('describe', payload, options)).json();
    assert.deepEqual(await described('héllo'), { encoding: 'utf8', hex: '68c3a96c6c6f' });
    assert.deepEqual(await described('hé', { encoding: 'utf16' }), { encoding: 'utf16', hex: '6800e900' });
    assert.deepEqual(await described(new Uint8Array([0, 1, 255])), { encoding: 'binary', hex: '0001ff' });
    assert.deepEqual(await described(new Uint8Array([7, 8]).buffer), { encoding: 'binary', hex: '0708' });
    assert.deepEqual(await described({ a: 1 }), { encoding: 'utf8', hex: Buffer.from('{"a":1}').toString('hex') });

    const text = 'grüße 🦀 "quoted"';
    const utf8 = await client.request('echo', text);
    assert.equal(utf8.encoding, 'utf8');
    assert.equal(utf8.text(), text);
    const utf16 = await client.request('echo', text, { encoding: 'utf16' });
    assert.equal(utf16.encoding, 'utf16');
    assert.equal(utf16.text(), text);
    const binary = await client.request('echo', new Uint8Array([1, 2, 3]));
    assert.equal(binary.encoding, 'binary');
    assert.deepEqual([...binary.data], [1, 2, 3]);
    // A name without a payload is a valid request; the reply is empty.
    assert.equal((await client.request('echo')).length, 0);
  });

  test('call and emit: values as UTF-8 JSON, replies read as JSON', async () => {
    const client = await open();
    const value = { user: 'zoë', n: [1, 2] };
    assert.deepEqual(await client.call('echo', value), value);
    // A string is sent as JSON too (quoted), unlike `request`.
    assert.equal(await client.call('echo', 'quoted'), 'quoted');
    assert.equal((await client.request('echo', Payload.utf8(JSON.stringify('quoted')))).text(), '"quoted"');
    assert.equal(await client.call('echo', null), null);
    const back = nextEvent(client, 'signal');
    await client.emit('typing', { user: 'zoë' });
    const { detail } = await back;
    assert.equal(detail.name, 'typing');
    assert.equal(detail.payload.encoding, 'utf8');
    assert.deepEqual(detail.payload.json(), { user: 'zoë' });
  });

  test('error replies reject with their kind', async () => {
    const client = await open();
    const failed = await rejection(client.request('error', 'it went wrong'), 'error');
    assert.ok(failed instanceof ReplyError);
    assert.equal(failed.kind, 'reply');
    assert.equal(failed.code, 'SAMPLE_ERROR');
    assert.equal(failed.serverMessage, 'it went wrong');
    const internal = await rejection(client.request('internal'), 'internal');
    assert.ok(internal instanceof InternalError);
    assert.equal(internal.kind, 'internal');
    const unknown = await rejection(client.request('no-such-request', 'x'), 'unknown');
    assert.equal(unknown.code, 'UNKNOWN_REQUEST');
  });

  test('a request times out, its late reply is ignored, and the connection carries on', async () => {
    const client = await open();
    const timedOut = await rejection(client.request('hold', '', { timeout: 50 }), 'hold');
    assert.ok(timedOut instanceof TimeoutError);
    assert.equal(timedOut.kind, 'timeout');
    // The hold's reply now arrives for a request nobody waits for.
    assert.equal((await client.request('release')).text(), 'released');
    assert.equal((await client.request('echo', 'still here')).text(), 'still here');
    assert.ok(client.connected);
  });

  test('an AbortSignal aborts a request, before or after it was sent', async () => {
    const client = await open();
    const controller = new AbortController();
    const held = client.request('hold', '', { signal: controller.signal });
    controller.abort('changed my mind');
    const aborted = await rejection(held, 'aborted hold');
    assert.ok(aborted instanceof AbortError);
    assert.equal(aborted.kind, 'aborted');
    assert.equal(aborted.cause, 'changed my mind');
    const early = await rejection(client.request('echo', 'x', { signal: controller.signal }), 'pre-aborted');
    assert.ok(early instanceof AbortError);
    await client.request('release');
  });

  test('signals go both ways, in each encoding, and arrive in order with replies', async () => {
    const client = await open();
    const received = [];
    client.on('signal', (event) => received.push(event.detail));
    const back = nextEvent(client, 'signal');
    await client.signal('ping', 'hi');
    const { detail } = await back;
    assert.equal(detail.name, 'ping');
    assert.equal(detail.payload.encoding, 'utf8');
    assert.equal(detail.payload.text(), 'hi');

    const utf16 = nextEvent(client, 'signal');
    await client.signal('wide', 'ü🦀', { encoding: 'utf16' });
    assert.equal((await utf16).detail.payload.text(), 'ü🦀');
    assert.equal((await utf16).detail.payload.encoding, 'utf16');
    const binary = nextEvent(client, 'signal');
    await client.signal('', new Uint8Array([9]));
    assert.deepEqual([...(await binary).detail.payload.data], [9]);

    // The server signals before it replies: the signal is there when the reply is.
    received.length = 0;
    assert.equal((await client.request('signal-me', 'a note')).text(), 'sent');
    assert.deepEqual(received.map((d) => [d.name, d.payload.text()]), [['note', 'a note']]);
  });

  test('messages over the server limit are refused locally, without closing', async () => {
    const client = await open();
    // RequestBinary: 10 header bytes + the name "echo" + payload = the limit, 1024.
    const fits = await client.request('echo', new Uint8Array(1010));
    assert.equal(fits.length, 1010);
    const tooLarge = await rejection(client.request('echo', new Uint8Array(1011)), 'oversize');
    assert.ok(tooLarge instanceof LimitError);
    assert.equal(tooLarge.kind, 'limit');
    assert.equal(tooLarge.limit, 1024);
    const signal = await rejection(client.signal('big', new Uint8Array(2000)), 'oversize signal');
    assert.ok(signal instanceof LimitError);
    assert.equal((await client.request('echo', 'ok')).text(), 'ok');
  });

  test('heartbeats keep an idle connection open past the read timeout', async () => {
    const client = await open();
    let lost = null;
    client.on('disconnect', (event) => (lost = event.detail.error));
    // The server drops a connection silent for 2 s; idle for longer than that (waiting for
    // time to pass is what is tested here).
    await new Promise((resolve) => setTimeout(resolve, 2600));
    assert.equal(lost, null);
    assert.equal((await client.request('echo', 'alive')).text(), 'alive');
  });

  test('sessions: created by the server, restored elsewhere, limited, closed by the server', async () => {
    const alice = await open();
    const created = nextEvent(alice, 'sessioncreated');
    assert.equal((await alice.request('login', 'alice')).text(), 'logged in');
    const { detail } = await created;
    assert.equal(detail.restored, false);
    assert.equal(detail.session.info.user, 'alice');
    assert.ok(detail.session.created instanceof Date);
    assert.deepEqual(alice.session, detail.session);
    assert.equal((await alice.request('whoami')).text(), 'alice');

    // The same login on a second connection (a second tab), not on a third (limit 2).
    const second = await open();
    const restored = await second.restoreSession(alice.session.key);
    assert.equal(restored.info.user, 'alice');
    assert.equal((await second.request('whoami')).text(), 'alice');
    const third = await open();
    const limited = await rejection(third.restoreSession(alice.session.key), 'third restore');
    assert.ok(limited instanceof MaxSessionConnectionsError);
    assert.equal(limited.kind, 'max_session_connections');
    assert.equal(third.session, null);

    const unknown = await rejection(third.restoreSession('no-such-session-key'), 'unknown key');
    assert.ok(unknown instanceof SessionNotFoundError);
    assert.equal(unknown.kind, 'session_not_found');

    // Logged out by the server: the client is told.
    const closed = nextEvent(second, 'sessionclosed');
    await second.request('logout');
    assert.equal((await closed).detail.reason, 'server');
    assert.equal(second.session, null);
    assert.equal((await rejection(second.request('whoami'), 'whoami')).code, 'NO_SESSION');
  });

  test('closeSession logs out from the client', async () => {
    const client = await open();
    await client.request('login', 'dave');
    const closed = nextEvent(client, 'sessionclosed');
    await client.closeSession();
    assert.equal((await closed).detail.reason, 'closed');
    assert.equal(client.session, null);
    assert.equal((await rejection(client.request('whoami'), 'whoami')).code, 'NO_SESSION');
  });

  test('a session persisted in storage is restored by the next client (a page reload)', async () => {
    const storage = memoryStorage();
    const first = await open({ persistSession: storage });
    const created = nextEvent(first, 'sessioncreated');
    await first.request('login', 'erin');
    await created;
    assert.equal(storage.items.size, 1);
    first.close();

    const reloaded = new WebWireClient(peer().url, { ...OPTIONS, persistSession: storage });
    clients.push(reloaded);
    const restored = nextEvent(reloaded, 'sessioncreated');
    await within(reloaded.connect(), 'connect');
    assert.equal((await restored).detail.restored, true);
    assert.equal(reloaded.session?.info.user, 'erin');
    assert.equal((await reloaded.request('whoami')).text(), 'erin');

    await reloaded.closeSession();
    assert.equal(storage.items.size, 0);
  });

  test('a forgotten session is dropped from storage after a failed restore', async () => {
    const storage = memoryStorage();
    const probe = new WebWireClient(peer().url, { ...OPTIONS, autoconnect: false, persistSession: storage });
    storage.setItem(`webwire-session:${probe.url}`, JSON.stringify({ session: 'unknown-key' }));
    clients.push(probe);
    const dropped = nextEvent(probe, 'sessionclosed');
    await within(probe.connect(), 'connect');
    assert.equal((await dropped).detail.reason, 'restore-failed');
    assert.equal(storage.items.size, 0);
    assert.equal((await probe.request('echo', 'x')).text(), 'x');
  });

  test('sessions disabled: a restore fails at once with its kind (no timeout)', async () => {
    const client = await open({ requestTimeout: 60_000 }, peer().noSessionsUrl);
    const disabled = await rejection(client.restoreSession('any-key'), 'restore');
    assert.ok(disabled instanceof SessionsDisabledError);
    assert.equal(disabled.kind, 'sessions_disabled');
  });

  test('autoconnect off: nothing connects until connect(), requests fail meanwhile', async () => {
    const client = new WebWireClient(peer().url, { ...OPTIONS, autoconnect: false });
    clients.push(client);
    assert.equal(client.state, 'idle');
    const refused = await rejection(client.request('echo', 'x'), 'request while idle');
    assert.ok(refused instanceof DisconnectedError);
    assert.equal(client.state, 'idle');
    await within(client.connect(), 'connect');
    assert.equal((await client.request('echo', 'x')).text(), 'x');
  });

  test('restoreSession made while connecting waits for the connection', async () => {
    const owner = await open();
    await owner.request('login', 'frank');
    const client = new WebWireClient(peer().url, OPTIONS);
    clients.push(client);
    assert.equal(client.state, 'connecting');
    const session = await within(client.restoreSession(owner.session.key), 'restore');
    assert.equal(session.info.user, 'frank');
    assert.equal((await client.request('whoami')).text(), 'frank');
  });

  test('autoconnect on: a request made before the connection waits for it', async () => {
    const client = new WebWireClient(peer().url, OPTIONS);
    clients.push(client);
    assert.equal(client.state, 'connecting');
    assert.equal((await within(client.request('echo', 'early'), 'early request')).text(), 'early');
  });

  // Per-client request ids: protocol.test.js checks the ids on the wire ("each client has
  // its own id counter from 1"); against a real server a shared counter would pass too.

  test('close() rejects what is in flight and stops reconnecting', async () => {
    const client = await open();
    const held = client.request('hold');
    const gone = nextEvent(client, 'disconnect');
    client.close();
    const error = await rejection(held, 'held request');
    assert.ok(error instanceof DisconnectedError);
    assert.equal((await gone).detail.reconnecting, false);
    assert.equal(client.state, 'closed');
    assert.ok((await rejection(client.request('echo', 'x'), 'after close')) instanceof DisconnectedError);
    await client.request('release').catch(() => {});
    await (await open()).request('release');
  });

  test('a server restart: shutdown replies, reconnect, session restored, a request waits through it', async () => {
    const client = await open();
    await client.request('login', 'carol');
    const held = client.request('hold');
    /** @type {Promise<Payload> | undefined} */
    let waited;
    let stateWhenIssued;
    const disconnected = nextEvent(client, 'disconnect');
    client.on('disconnect', () => {
      // Issued while the connection is down: it must wait for the next one.
      stateWhenIssued ??= client.state;
      waited ??= client.request('whoami');
    });
    assert.equal((await client.request('restart')).text(), 'restarting');
    // The shutdown has begun: new requests get the shutdown reply, and the held one too
    // once the server stops it.
    const refused = await rejection(client.request('echo', 'x'), 'echo during shutdown');
    assert.ok(refused instanceof ShutdownError);
    assert.equal(refused.kind, 'shutdown');
    assert.ok((await rejection(held, 'held request')) instanceof ShutdownError);

    const restored = nextEvent(client, 'sessioncreated');
    const reconnected = nextEvent(client, 'connect');
    assert.equal((await disconnected).detail.reconnecting, true);
    assert.equal(stateWhenIssued, 'reconnecting');
    await reconnected;
    assert.equal((await restored).detail.restored, true);
    assert.equal((await within(waited, 'the waiting request')).text(), 'carol');
    assert.equal(client.session?.info.user, 'carol');
  });

  test('errors are WebWireErrors with their own kind and name', () => {
    const cases = [
      [new ReplyError('C', 'm'), 'reply', 'ReplyError'],
      [new InternalError(), 'internal', 'InternalError'],
      [new ShutdownError(), 'shutdown', 'ShutdownError'],
      [new SessionNotFoundError(), 'session_not_found', 'SessionNotFoundError'],
      [new MaxSessionConnectionsError(), 'max_session_connections', 'MaxSessionConnectionsError'],
      [new SessionsDisabledError(), 'sessions_disabled', 'SessionsDisabledError'],
      [new LimitError(2, 1), 'limit', 'LimitError'],
      [new TimeoutError(1), 'timeout', 'TimeoutError'],
      [new DisconnectedError(), 'disconnected', 'DisconnectedError'],
      [new AbortError(), 'aborted', 'AbortError'],
      [new ProtocolError('x'), 'protocol', 'ProtocolError'],
      [new CodecError('x'), 'invalid', 'CodecError'],
    ];
    for (const [error, kind, name] of cases) {
      assert.ok(error instanceof WebWireError, name);
      assert.ok(error instanceof Error, name);
      assert.equal(error.kind, kind, name);
      assert.equal(error.name, name);
    }
    assert.equal(new ReplyError('C', 'm').message, 'C: m');
    assert.equal(new ReplyError('C', '').message, 'C');
  });
});

test('a shutdown request ends the peer; the client reports the loss', async () => {
  const peer = await startPeer();
  const client = await within(connect(peer.url, { ...OPTIONS, reconnect: false }), 'connect');
  const gone = nextEvent(client, 'disconnect');
  assert.equal((await client.request('shutdown')).text(), 'shutting down');
  const { detail } = await gone;
  assert.ok(detail.error instanceof DisconnectedError);
  assert.equal(detail.reconnecting, false);
  assert.equal(await within(peer.exited, 'the peer to exit'), 0);
  assert.ok((await rejection(client.request('echo', 'x'), 'after the loss')) instanceof DisconnectedError);
});
