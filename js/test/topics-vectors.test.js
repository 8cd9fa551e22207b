// The topics extension's golden messages (tests/data/topics-vectors.json, which the Rust
// tests read too) through this client's codec: every valid message parses to its listed
// fields and the client writes its requests byte for byte; every invalid payload is
// rejected.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import {
  parse,
  encode,
  Payload,
  ProtocolError,
  TOPICS_SUBPROTOCOL,
  encodeSubscribe,
  parseSubscribe,
  parseSubscribed,
  parsePublication,
} from '../webwire.js';
import { repoRoot } from './support/shared.js';

const file = JSON.parse(readFileSync(join(repoRoot, 'tests', 'data', 'topics-vectors.json'), 'utf8'));
const hex = (/** @type {Uint8Array} */ bytes) => Buffer.from(bytes).toString('hex');
const bytes = (/** @type {string} */ text) => new Uint8Array(Buffer.from(text, 'hex'));
const position = (decoded) => (decoded.epoch_hex === null ? null : { epoch: decoded.epoch_hex, offset: decoded.offset });

test('the sub-protocol is the one the vectors name', () => {
  assert.equal(file.subprotocol, TOPICS_SUBPROTOCOL);
  assert.ok(file.valid.length >= 15);
});

for (const vector of file.valid) {
  test(`valid: ${vector.name}`, () => {
    const d = vector.decoded;
    const msg = parse(bytes(vector.hex));
    switch (d.kind) {
      case 'subscribe': {
        assert.equal(msg.kind, 'RequestBinary');
        assert.equal(msg.name, 'ww.subscribe');
        assert.equal(hex(msg.id), d.id_hex);
        const resume = d.resume === null ? null : { epoch: d.resume.epoch_hex, offset: d.resume.offset };
        assert.deepEqual(parseSubscribe(msg.payload.data), { topic: d.topic, resume });
        // What the client writes.
        const written = encode({ kind: 'RequestBinary', id: bytes(d.id_hex), name: 'ww.subscribe', payload: Payload.binary(encodeSubscribe(d.topic, resume)) });
        assert.equal(hex(written), vector.hex);
        break;
      }
      case 'unsubscribe': {
        assert.equal(msg.name, 'ww.unsubscribe');
        assert.equal(msg.payload.text(), d.topic);
        const written = encode({ kind: 'RequestBinary', id: bytes(d.id_hex), name: 'ww.unsubscribe', payload: Payload.binary(new TextEncoder().encode(d.topic)) });
        assert.equal(hex(written), vector.hex);
        break;
      }
      case 'answer':
        assert.equal(msg.kind, 'ReplyBinary');
        assert.deepEqual(parseSubscribed(msg.payload.data), { status: d.status, position: position(d) });
        break;
      case 'unsubscribed':
        assert.equal(msg.kind, 'ReplyBinary');
        assert.equal(msg.payload.length, 0);
        break;
      case 'publication': {
        assert.equal(msg.kind, 'SignalBinary');
        assert.equal(msg.name, 'ww.pub');
        const publication = parsePublication(msg.payload.data);
        assert.equal(publication.topic, d.topic);
        assert.deepEqual(publication.position, position(d));
        assert.equal(hex(encode(publication.signal)), d.signal_hex);
        assert.equal(publication.signal.name, d.signal.name);
        assert.equal(publication.signal.payload.encoding, d.signal.encoding);
        assert.equal(hex(publication.signal.payload.data), d.signal.payload_hex);
        break;
      }
      case 'error':
        assert.equal(msg.kind, 'ReplyError');
        assert.equal(msg.code, d.code);
        assert.equal(msg.message, d.message);
        break;
      default:
        assert.fail(`unknown kind ${d.kind}`);
    }
  });
}

for (const vector of file.invalid) {
  test(`invalid: ${vector.name}`, () => {
    const payload = bytes(vector.payload_hex);
    const read = { subscribe: parseSubscribe, unsubscribe: unsubscribeTopic, answer: parseSubscribed, publication: parsePublication }[vector.kind];
    assert.ok(read, vector.kind);
    assert.throws(() => read(payload), ProtocolError, vector.why);
  });
}

/** How a server reads an unsubscribe's payload: 1..1024 bytes of UTF-8. @param {Uint8Array} payload */
function unsubscribeTopic(payload) {
  return parseSubscribe(new Uint8Array([0, ...payload])).topic;
}
