// Every golden vector of shared/protocol-vectors.json through the codec: valid ones parse to
// the listed fields (with the strict verdict where a vector carries one) and are written
// back byte for byte where a writer may produce them; invalid ones are rejected.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { parse, encode, Payload, ProtocolError, CodecError, parseSession } from '../webwire.js';
import { loadVectors } from './support/shared.js';

const vectors = loadVectors();
const hex = (/** @type {Uint8Array} */ bytes) => Buffer.from(bytes).toString('hex');
const bytes = (/** @type {string} */ text) => new Uint8Array(Buffer.from(text, 'hex'));

// The writer never reproduces these inputs (PROTOCOL.md §7): the padding byte is written as
// 00, trailing bytes of a special reply are not written.
const NOT_WRITTEN_BACK = new Set(['request_utf16_padding_value_ignored', 'reply_internal_error_trailing_bytes']);

test('the vectors file has every vector of PROTOCOL.md §7', () => {
  assert.equal(vectors.length, 68);
  assert.equal(vectors.filter((v) => v.valid).length, 42);
});

/** The vector's decoded fields in the codec's form. */
function expected(decoded) {
  const out = { kind: decoded.kind };
  if ('id_hex' in decoded) out.id = decoded.id_hex;
  if ('name' in decoded) out.name = decoded.name;
  if ('encoding' in decoded) out.payload = { encoding: decoded.encoding, hex: decoded.payload_hex };
  if ('error_code' in decoded) {
    out.code = decoded.error_code;
    out.message = decoded.error_message;
  }
  if (decoded.kind === 'AcceptConf') {
    Object.assign(out, {
      major: decoded.major,
      minor: decoded.minor,
      readTimeout: decoded.read_timeout_ms,
      messageBufferSize: decoded.message_buffer_size,
      subProtocol: decoded.sub_protocol,
    });
  }
  if ('session_key' in decoded) out.key = decoded.session_key;
  if ('session' in decoded) out.session = decoded.session;
  return out;
}

/** The parsed message in the same form. */
function actual(msg, decoded) {
  const out = { kind: msg.kind };
  if ('id' in msg) out.id = hex(msg.id);
  if ('name' in msg) out.name = msg.name;
  if ('payload' in msg) out.payload = { encoding: msg.payload.encoding, hex: hex(msg.payload.data) };
  if ('code' in msg) {
    out.code = msg.code;
    out.message = msg.message;
  }
  if (msg.kind === 'AcceptConf') {
    Object.assign(out, {
      major: msg.major,
      minor: msg.minor,
      readTimeout: msg.readTimeout,
      messageBufferSize: msg.messageBufferSize,
      subProtocol: msg.subProtocol === null ? null : new TextDecoder().decode(msg.subProtocol),
    });
  }
  // The vectors list a session key and a session's JSON as a binary payload as well.
  if ('key' in msg) {
    out.key = new TextDecoder().decode(msg.key);
    out.payload = { encoding: 'binary', hex: hex(msg.key) };
  }
  if ('session' in msg) {
    out.payload = { encoding: 'binary', hex: hex(new TextEncoder().encode(msg.session)) };
    out.session = JSON.parse(msg.session);
  } else if ('session' in decoded) {
    // A restore reply: the session is the reply's text.
    out.session = JSON.parse(msg.payload.text());
  }
  return out;
}

for (const vector of vectors) {
  const valid = vector.strict?.valid ?? vector.valid;
  test(`vector ${vector.name}: ${valid ? 'parses' : 'is rejected'}`, () => {
    const frame = bytes(vector.hex);
    if (!valid) {
      assert.throws(() => parse(frame), ProtocolError, vector.reason ?? vector.strict?.reason);
      return;
    }
    const msg = parse(frame);
    assert.deepEqual(actual(msg, vector.decoded), expected(vector.decoded));
    if ('payload_text' in vector.decoded) {
      const text = msg.kind === 'NotifySessionCreated' ? msg.session : msg.payload.text();
      assert.equal(text, vector.decoded.payload_text);
    }
    if (!NOT_WRITTEN_BACK.has(vector.name)) assert.equal(hex(encode(msg)), vector.hex);
  });
}

test('a writer refuses the name the strict parser refuses', () => {
  const vector = vectors.find((v) => v.name === 'signal_name_control_char_parser_accepts');
  assert.equal(vector.strict.valid, false);
  assert.throws(() => encode({ kind: 'SignalUtf8', name: '\n', payload: Payload.utf8('x') }), CodecError);
});

test('the padding-value and trailing-byte vectors are written in their canonical form', () => {
  const padded = parse(bytes('8101000000000000000161ff4100'));
  assert.equal(hex(encode(padded)), '8101000000000000000161004100');
  const trailing = parse(bytes('020100000000000000ff'));
  assert.equal(hex(encode(trailing)), '020100000000000000');
});

test('writers refuse what parsers reject (PROTOCOL.md §2.5)', () => {
  const id = new Uint8Array(8);
  const empty = new Payload('binary', new Uint8Array(0));
  assert.throws(() => encode({ kind: 'RequestBinary', id, name: '', payload: empty }), CodecError);
  assert.throws(() => encode({ kind: 'SignalBinary', name: '', payload: empty }), CodecError);
  assert.throws(() => encode({ kind: 'SignalUtf16', name: 'ab', payload: Payload.utf16('') }), CodecError);
  assert.throws(() => encode({ kind: 'RequestUtf8', id, name: 'n'.repeat(256), payload: Payload.utf8('x') }), CodecError);
  assert.throws(() => encode({ kind: 'RequestUtf8', id, name: 'é', payload: Payload.utf8('x') }), CodecError);
  assert.throws(() => encode({ kind: 'ReplyError', id, code: '', message: '' }), CodecError);
  assert.throws(() => new Payload('utf16', new Uint8Array(3)), TypeError);
});

test('UTF-16 text keeps surrogate pairs and is little-endian', () => {
  const payload = Payload.utf16('a🦀');
  assert.equal(hex(payload.data), '61003ed880dd');
  assert.equal(payload.text(), 'a🦀');
  // Four-byte UTF-8 sequences survive too (webwire-js dropped them, §8 item 7).
  assert.equal(Payload.utf8('🦀').text(), '🦀');
});

test('session JSON of the vectors parses into key, dates and info', () => {
  const vector = vectors.find((v) => v.name === 'notify_session_created');
  const msg = parse(bytes(vector.hex));
  const session = parseSession(msg.session);
  assert.equal(session.key, 'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v');
  assert.equal(session.created.toISOString(), '2019-01-04T20:19:06.123Z');
  assert.deepEqual(session.info, { uid: 42, user: 'alice' });
  assert.throws(() => parseSession('{"k":"x"}'), ProtocolError);
  assert.throws(() => parseSession('not json'), ProtocolError);
});

test('a payload that starts with U+FEFF keeps it when decoded (UTF-8 and UTF-16)', () => {
  // A default TextDecoder strips a leading byte order mark: the text would lose a character.
  assert.equal(Payload.utf8('\uFEFFhi').text(), '\uFEFFhi');
  assert.equal(Payload.utf16('\uFEFFhi').text(), '\uFEFFhi');
  const signal = parse(bytes('4001' + '61' + 'efbbbf6869'));
  assert.equal(signal.payload.text(), '\uFEFFhi');
});

test('parse reads a Buffer slice that does not start at offset 0 of its ArrayBuffer', () => {
  // Node hands messages over as Buffers, small ones slices of a shared pool (PROTOCOL.md §8):
  // every read must go through the view's byteOffset, never the ArrayBuffer's start.
  const pool = Buffer.alloc(64, 0xaa);
  const place = (hex, at) => {
    const frame = Buffer.from(hex, 'hex');
    frame.copy(pool, at);
    return pool.subarray(at, at + frame.length);
  };
  const conf = parse(place('170200' + '60ea0000' + '00200000' + '63686174', 13));
  assert.equal(conf.kind, 'AcceptConf');
  assert.equal(conf.readTimeout, 60_000);
  assert.equal(conf.messageBufferSize, 8192);
  assert.equal(Buffer.from(conf.subProtocol).toString(), 'chat');
  const reply = parse(place('c0' + '0102030405060708' + '6f6b', 37));
  assert.equal(hex(reply.id), '0102030405060708');
  assert.equal(reply.payload.text(), 'ok');
  const signal = parse(place('41' + '03' + '616263' + '00' + '68006900', 3));
  assert.equal(signal.name, 'abc');
  assert.equal(signal.payload.text(), 'hi');
});
