// WebWire protocol v2.0 client for browsers and Node 20+: a dependency-free ES module.
//
// The wire format is specified in PROTOCOL.md (§1-§5); the codec below follows the strict
// rules of tokio-webwire's Rust codec (names and error codes printable ASCII, UTF-16 header
// padding, 8-byte little-endian request identifiers). See README.md for the API.
//
// Over 600 lines on purpose: the client ships as this one file, which a page imports as is
// (no bundler, no dependencies); its parts run in order: codec, errors, `WebWireClient`.

/** @typedef {'binary' | 'utf8' | 'utf16'} Encoding */

/** Message type bytes (PROTOCOL.md §2.1). */
export const MessageType = Object.freeze({
  ReplyError: 0x00,
  ReplyShutdown: 0x01,
  ReplyInternalError: 0x02,
  ReplySessionNotFound: 0x03,
  ReplyMaxSessConnsReached: 0x04,
  ReplySessionsDisabled: 0x05,
  NotifySessionCreated: 0x15,
  NotifySessionClosed: 0x16,
  AcceptConf: 0x17,
  RequestCloseSession: 0x1f,
  RequestRestoreSession: 0x20,
  Heartbeat: 0x21,
  SignalBinary: 0x3f,
  SignalUtf8: 0x40,
  SignalUtf16: 0x41,
  RequestBinary: 0x7f,
  RequestUtf8: 0x80,
  RequestUtf16: 0x81,
  ReplyBinary: 0xbf,
  ReplyUtf8: 0xc0,
  ReplyUtf16: 0xc1,
});

/** @type {Map<number, string>} */
const KIND_OF_TYPE = new Map(Object.entries(MessageType).map(([kind, type]) => [type, kind]));
const ENCODINGS = ['binary', 'utf8', 'utf16'];
// The three types of a family (signal, request, reply) are consecutive: binary, UTF-8, UTF-16.
const FAMILY_BASE = { Signal: 0x3f, Request: 0x7f, Reply: 0xbf };

const utf8Encoder = new TextEncoder();
// ignoreBOM: a payload that starts with U+FEFF keeps it (the default strips it).
const utf8Decoder = new TextDecoder('utf-8', { ignoreBOM: true });
const utf16Decoder = new TextDecoder('utf-16le', { ignoreBOM: true });

// ---------------------------------------------------------------------------------------
// Errors

/**
 * The base of every error this module reports; `kind` tells which one it is, so that a
 * caller can branch on `error.kind` as well as on `instanceof`.
 */
export class WebWireError extends Error {
  /**
   * @param {string} kind
   * @param {string} message
   * @param {{cause?: unknown}} [options]
   */
  constructor(kind, message, options) {
    super(message, options);
    /** @type {string} */
    this.kind = kind;
    this.name = 'WebWireError';
  }
}

/** The server's handler answered with an error reply: `code` (ASCII) and `message`. */
export class ReplyError extends WebWireError {
  /** @param {string} code @param {string} message */
  constructor(code, message) {
    super('reply', message === '' ? code : `${code}: ${message}`);
    this.name = 'ReplyError';
    /** @type {string} */
    this.code = code;
    /** The server's message (may be empty). @type {string} */
    this.serverMessage = message;
  }
}

/** The server failed to handle the request (reply `02`); details are only in its log. */
export class InternalError extends WebWireError {
  constructor() {
    super('internal', 'the server failed to handle the request');
    this.name = 'InternalError';
  }
}

/** The server is shutting down and did not handle the request (reply `01`). */
export class ShutdownError extends WebWireError {
  constructor() {
    super('shutdown', 'the server is shutting down');
    this.name = 'ShutdownError';
  }
}

/** The session to restore does not exist (any more) on the server (reply `03`). */
export class SessionNotFoundError extends WebWireError {
  constructor() {
    super('session_not_found', 'session not found');
    this.name = 'SessionNotFoundError';
  }
}

/** The session already has as many connections as the server allows (reply `04`). */
export class MaxSessionConnectionsError extends WebWireError {
  constructor() {
    super('max_session_connections', 'the session has reached its connection limit');
    this.name = 'MaxSessionConnectionsError';
  }
}

/** The server does not support sessions (reply `05`). */
export class SessionsDisabledError extends WebWireError {
  constructor() {
    super('sessions_disabled', 'sessions are disabled on the server');
    this.name = 'SessionsDisabledError';
  }
}

/** A message is larger than the server accepts (the AcceptConf's buffer size): not sent. */
export class LimitError extends WebWireError {
  /** @param {number} size @param {number} limit */
  constructor(size, limit) {
    super('limit', `message of ${size} bytes exceeds the server's limit of ${limit} bytes`);
    this.name = 'LimitError';
    this.size = size;
    this.limit = limit;
  }
}

/** No reply within the request's timeout. */
export class TimeoutError extends WebWireError {
  /** @param {number} ms */
  constructor(ms) {
    super('timeout', `no reply within ${ms} ms`);
    this.name = 'TimeoutError';
  }
}

/**
 * The connection was lost or closed before the reply came (a request already sent is
 * never sent again: the server may have handled it), or the client is not connected and
 * will not connect.
 */
export class DisconnectedError extends WebWireError {
  /** @param {string} [message] @param {{cause?: unknown}} [options] */
  constructor(message = 'disconnected', options) {
    super('disconnected', message, options);
    this.name = 'DisconnectedError';
  }
}

/** The caller's `AbortSignal` aborted the request; `cause` is the signal's reason. */
export class AbortError extends WebWireError {
  /** @param {unknown} [reason] */
  constructor(reason) {
    super('aborted', 'the request was aborted', { cause: reason });
    this.name = 'AbortError';
  }
}

/**
 * The peer broke the protocol: a message that does not parse, a wrong handshake, a text
 * message. The client closes the connection when it sees one.
 */
export class ProtocolError extends WebWireError {
  /** @param {string} message */
  constructor(message) {
    super('protocol', message);
    this.name = 'ProtocolError';
  }
}

// ---------------------------------------------------------------------------------------
// Payloads

/** A payload as it travels: bytes and their encoding. */
export class Payload {
  /** @param {Encoding} encoding @param {Uint8Array} data */
  constructor(encoding, data) {
    if (!ENCODINGS.includes(encoding)) throw new TypeError(`unknown encoding ${encoding}`);
    if (!(data instanceof Uint8Array)) throw new TypeError('payload data must be a Uint8Array');
    if (encoding === 'utf16' && data.length % 2 !== 0) {
      throw new TypeError('a UTF-16 payload has an even number of bytes');
    }
    /** @type {Encoding} */
    this.encoding = encoding;
    /** The bytes as on the wire (UTF-16 as little-endian code units). @type {Uint8Array} */
    this.data = data;
  }

  /** A UTF-8 payload of `text`. @param {string} text */
  static utf8(text) {
    return new Payload('utf8', utf8Encoder.encode(text));
  }

  /** A UTF-16 (little-endian) payload of `text`. @param {string} text */
  static utf16(text) {
    const data = new Uint8Array(text.length * 2);
    const view = new DataView(data.buffer);
    for (let i = 0; i < text.length; i++) view.setUint16(2 * i, text.charCodeAt(i), true);
    return new Payload('utf16', data);
  }

  /** A binary payload (the bytes are not copied). @param {Uint8Array | ArrayBuffer | ArrayBufferView} bytes */
  static binary(bytes) {
    return new Payload('binary', toBytes(bytes));
  }

  /**
   * The payload as text: UTF-16 decoded as such, anything else as UTF-8 (invalid
   * sequences become U+FFFD).
   * @returns {string}
   */
  text() {
    return this.encoding === 'utf16' ? utf16Decoder.decode(this.data) : utf8Decoder.decode(this.data);
  }

  /** The payload's text parsed as JSON. @returns {any} */
  json() {
    return JSON.parse(this.text());
  }

  /** The number of bytes. */
  get length() {
    return this.data.length;
  }
}

/** @param {Uint8Array | ArrayBuffer | ArrayBufferView} bytes */
function toBytes(bytes) {
  if (bytes instanceof Uint8Array) return bytes;
  if (bytes instanceof ArrayBuffer) return new Uint8Array(bytes);
  if (ArrayBuffer.isView(bytes)) return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  throw new TypeError('expected a Uint8Array, an ArrayBuffer or an ArrayBufferView');
}

/**
 * What `request` and `signal` accept as a payload: a string (UTF-8 by default, UTF-16 with
 * `{encoding: 'utf16'}`), bytes (binary), a `Payload` (as it is), `undefined`/`null`
 * (empty), or any other value, sent as its JSON text in UTF-8.
 * @param {unknown} value
 * @param {Encoding | undefined} encoding
 * @returns {Payload}
 */
export function toPayload(value, encoding) {
  if (value instanceof Payload) return value;
  if (value === undefined || value === null) return new Payload(encoding ?? 'binary', new Uint8Array(0));
  if (value instanceof ArrayBuffer || ArrayBuffer.isView(value)) {
    const bytes = toBytes(/** @type {ArrayBuffer} */ (value));
    return new Payload(encoding ?? 'binary', bytes);
  }
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  if (text === undefined) throw new TypeError('payload cannot be encoded as JSON');
  if ((encoding ?? 'utf8') === 'utf8') return Payload.utf8(text);
  if (encoding === 'utf16') return Payload.utf16(text);
  return new Payload('binary', utf8Encoder.encode(text));
}

// ---------------------------------------------------------------------------------------
// Codec

/**
 * A parsed or to-be-written message. `kind` is the name of its type (see `MessageType`);
 * the other fields depend on it: `id` (Uint8Array of 8 bytes), `name` (string),
 * `payload` (Payload), `code` and `message` (error replies), `session` (JSON text),
 * `key` (Uint8Array), and the AcceptConf's `major`, `minor`, `readTimeout` (ms),
 * `messageBufferSize`, `subProtocol` (Uint8Array or null).
 * @typedef {{kind: string, [field: string]: any}} Message
 */

/**
 * Thrown by `encode` (and so by `request` and `signal`) for a message a writer must not
 * produce: a bad name, neither name nor payload, an odd UTF-16 payload. `parse` throws
 * `ProtocolError` instead: there the peer is at fault.
 */
export class CodecError extends WebWireError {
  /** @param {string} message */
  constructor(message) {
    super('invalid', message);
    this.name = 'CodecError';
  }
}

/** @param {number} byte */
const printable = (byte) => byte >= 0x20 && byte <= 0x7e;

/**
 * Checks a name or error code as writers and the strict parser do (printable ASCII).
 * @param {Uint8Array} bytes @param {string} what
 */
function checkAscii(bytes, what) {
  for (const byte of bytes) {
    if (!printable(byte)) {
      throw new ProtocolError(`${what} byte 0x${byte.toString(16).padStart(2, '0')} is outside 0x20..0x7E`);
    }
  }
}

/** @param {Uint8Array} bytes */
const ascii = (bytes) => String.fromCharCode(...bytes);

/**
 * Parses one WebWire message (one WebSocket binary message), strictly: every length rule of
 * PROTOCOL.md §2.4, and names and error codes must be printable ASCII (0x20..0x7E), as
 * tokio-webwire's codec demands. Throws `ProtocolError` when the message is invalid.
 * @param {Uint8Array | ArrayBuffer} input
 * @returns {Message}
 */
export function parse(input) {
  const frame = toBytes(input);
  const len = frame.length;
  if (len === 0) throw new ProtocolError('empty message: no type byte');
  const type = frame[0];
  const kind = KIND_OF_TYPE.get(type);
  if (kind === undefined) throw new ProtocolError(`unknown message type ${type}`);
  const atLeast = (/** @type {number} */ min) => {
    if (len < min) throw new ProtocolError(`${kind}: ${len} bytes, needs at least ${min}`);
  };
  const exactly = (/** @type {number} */ n) => {
    if (len !== n) throw new ProtocolError(`${kind}: ${len} bytes, must be exactly ${n}`);
  };
  const even = () => {
    if (len % 2 !== 0) throw new ProtocolError(`${kind}: odd length ${len}`);
  };
  const id = () => frame.slice(1, 9);
  // Name: length byte at `at`, then the name; a UTF-16 payload after an odd name is padded.
  const nameAt = (/** @type {number} */ at, /** @type {boolean} */ utf16) => {
    const nameLen = frame[at];
    const end = at + 1 + nameLen;
    if (len < end) throw new ProtocolError(`${kind}: name length ${nameLen} exceeds the message`);
    const nameBytes = frame.subarray(at + 1, end);
    checkAscii(nameBytes, 'name');
    // The padding byte is there iff the name length is odd (its value is ignored). For a
    // request with an odd name and nothing after it the even-length rule already failed.
    const start = utf16 && nameLen % 2 === 1 ? end + 1 : end;
    return { name: ascii(nameBytes), start };
  };
  const encoding = /** @type {Encoding} */ (ENCODINGS[type - (type >= 0xbf ? 0xbf : type >= 0x7f ? 0x7f : 0x3f)]);
  switch (type) {
    case MessageType.ReplyError: {
      atLeast(11);
      const codeLen = frame[9];
      if (codeLen === 0) throw new ProtocolError('ReplyError: empty error code');
      if (len < 10 + codeLen) throw new ProtocolError(`ReplyError: code length ${codeLen} exceeds the message`);
      const code = frame.subarray(10, 10 + codeLen);
      checkAscii(code, 'error code');
      return { kind, id: id(), code: ascii(code), message: utf8Decoder.decode(frame.subarray(10 + codeLen)) };
    }
    case MessageType.ReplyShutdown:
    case MessageType.ReplyInternalError:
    case MessageType.ReplySessionNotFound:
    case MessageType.ReplyMaxSessConnsReached:
    case MessageType.ReplySessionsDisabled:
      // Trailing bytes are allowed and ignored (§2.3).
      atLeast(9);
      return { kind, id: id() };
    case MessageType.NotifySessionCreated:
      atLeast(2);
      return { kind, session: utf8Decoder.decode(frame.subarray(1)) };
    case MessageType.NotifySessionClosed:
    case MessageType.Heartbeat:
      exactly(1);
      return { kind };
    case MessageType.AcceptConf: {
      atLeast(11);
      const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
      return {
        kind,
        major: frame[1],
        minor: frame[2],
        readTimeout: view.getUint32(3, true),
        messageBufferSize: view.getUint32(7, true),
        subProtocol: len > 11 ? frame.slice(11) : null,
      };
    }
    case MessageType.RequestCloseSession:
      exactly(9);
      return { kind, id: id() };
    case MessageType.RequestRestoreSession:
      atLeast(10);
      return { kind, id: id(), key: frame.slice(9) };
    case MessageType.SignalBinary:
    case MessageType.SignalUtf8: {
      atLeast(3);
      const { name, start } = nameAt(1, false);
      return { kind, name, payload: new Payload(encoding, frame.slice(start)) };
    }
    case MessageType.SignalUtf16: {
      atLeast(4);
      even();
      const { name, start } = nameAt(1, true);
      atLeast(start + 2);
      return { kind, name, payload: new Payload(encoding, frame.slice(start)) };
    }
    case MessageType.RequestBinary:
    case MessageType.RequestUtf8: {
      atLeast(11);
      const { name, start } = nameAt(9, false);
      return { kind, id: id(), name, payload: new Payload(encoding, frame.slice(start)) };
    }
    case MessageType.RequestUtf16: {
      atLeast(11);
      even();
      const { name, start } = nameAt(9, true);
      atLeast(start);
      return { kind, id: id(), name, payload: new Payload(encoding, frame.slice(start)) };
    }
    case MessageType.ReplyBinary:
    case MessageType.ReplyUtf8:
      atLeast(9);
      return { kind, id: id(), payload: new Payload(encoding, frame.slice(9)) };
    case MessageType.ReplyUtf16:
      atLeast(10);
      even();
      return { kind, id: id(), payload: new Payload(encoding, frame.slice(10)) };
    default:
      throw new ProtocolError(`unknown message type ${type}`);
  }
}

/** @param {string} name */
function nameBytes(name) {
  if (typeof name !== 'string') throw new CodecError('a name is a string');
  const bytes = new Uint8Array(name.length);
  for (let i = 0; i < name.length; i++) {
    const unit = name.charCodeAt(i);
    if (!printable(unit)) {
      throw new CodecError(`name character U+${unit.toString(16).padStart(4, '0')} is outside 0x20..0x7E`);
    }
    bytes[i] = unit;
  }
  if (bytes.length > 255) throw new CodecError(`name of ${bytes.length} bytes: at most 255`);
  return bytes;
}

/** @param {Uint8Array} id */
function checkId(id) {
  if (!(id instanceof Uint8Array) || id.length !== 8) throw new CodecError('an identifier is 8 bytes');
  return id;
}

/** @param {number[]} head @param {...Uint8Array} parts */
function concat(head, ...parts) {
  const out = new Uint8Array(head.length + parts.reduce((n, p) => n + p.length, 0));
  out.set(head, 0);
  let at = head.length;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/**
 * Writes one message (the inverse of `parse`), refusing what a writer must not produce
 * (§2.5): names and error codes outside printable ASCII or longer than 255 bytes, a
 * request or signal with neither name nor payload, a UTF-16 signal with fewer than 2
 * payload bytes, odd UTF-16 payloads. Throws `CodecError`.
 * @param {Message} msg
 * @returns {Uint8Array}
 */
export function encode(msg) {
  const type = MessageType[/** @type {keyof typeof MessageType} */ (msg.kind)];
  if (type === undefined) throw new CodecError(`unknown message kind ${msg.kind}`);
  const family = /** @type {'Signal' | 'Request' | 'Reply' | undefined} */ (
    /^(Signal|Request|Reply)(?:Binary|Utf8|Utf16)$/.exec(msg.kind)?.[1]
  );
  if (family !== undefined) {
    /** @type {Payload} */
    const payload = msg.payload;
    if (!(payload instanceof Payload)) throw new CodecError(`${msg.kind} needs a Payload`);
    if (type !== FAMILY_BASE[family] + ENCODINGS.indexOf(payload.encoding)) {
      throw new CodecError(`${msg.kind} cannot carry a ${payload.encoding} payload`);
    }
    const utf16 = payload.encoding === 'utf16';
    if (family === 'Reply') return concat([type, ...checkId(msg.id), ...(utf16 ? [0] : [])], payload.data);
    const name = nameBytes(msg.name ?? '');
    if (name.length === 0 && payload.data.length === 0) {
      throw new CodecError(`a ${family.toLowerCase()} needs a name, a payload or both`);
    }
    if (family === 'Signal' && utf16 && payload.data.length < 2) {
      throw new CodecError('a UTF-16 signal needs at least one code unit (parsers reject it otherwise)');
    }
    const pad = utf16 && name.length % 2 === 1 ? [0] : [];
    const head = family === 'Request' ? [type, ...checkId(msg.id), name.length] : [type, name.length];
    return concat(head, name, new Uint8Array(pad), payload.data);
  }
  switch (type) {
    case MessageType.ReplyError: {
      const code = nameBytes(msg.code);
      if (code.length === 0) throw new CodecError('an error code has at least 1 byte');
      return concat([type, ...checkId(msg.id), code.length], code, utf8Encoder.encode(msg.message ?? ''));
    }
    case MessageType.ReplyShutdown:
    case MessageType.ReplyInternalError:
    case MessageType.ReplySessionNotFound:
    case MessageType.ReplyMaxSessConnsReached:
    case MessageType.ReplySessionsDisabled:
    case MessageType.RequestCloseSession:
      return concat([type, ...checkId(msg.id)]);
    case MessageType.NotifySessionCreated: {
      const json = utf8Encoder.encode(msg.session);
      if (json.length === 0) throw new CodecError('an empty session');
      return concat([type], json);
    }
    case MessageType.NotifySessionClosed:
    case MessageType.Heartbeat:
      return new Uint8Array([type]);
    case MessageType.AcceptConf: {
      const out = new Uint8Array(11);
      const view = new DataView(out.buffer);
      out.set([type, msg.major, msg.minor]);
      view.setUint32(3, msg.readTimeout, true);
      view.setUint32(7, msg.messageBufferSize, true);
      return concat([...out], msg.subProtocol ?? new Uint8Array(0));
    }
    case MessageType.RequestRestoreSession: {
      const key = typeof msg.key === 'string' ? utf8Encoder.encode(msg.key) : toBytes(msg.key);
      if (key.length === 0) throw new CodecError('an empty session key');
      return concat([type, ...checkId(msg.id)], key);
    }
    default:
      throw new CodecError(`cannot write ${msg.kind}`);
  }
}

/**
 * The 8-byte wire form of a request identifier: the counter as a u64, little-endian
 * (PROTOCOL.md §3). Counters stay below 2^53.
 * @param {number} n
 */
export function idBytes(n) {
  const id = new Uint8Array(8);
  const view = new DataView(id.buffer);
  view.setUint32(0, n % 0x1_0000_0000, true);
  view.setUint32(4, Math.floor(n / 0x1_0000_0000), true);
  return id;
}

/** The counter value of an identifier (NaN-free; values above 2^53 never match). @param {Uint8Array} id */
function idNumber(id) {
  const view = new DataView(id.buffer, id.byteOffset, 8);
  return view.getUint32(4, true) * 0x1_0000_0000 + view.getUint32(0, true);
}

// ---------------------------------------------------------------------------------------
// Sessions

/**
 * A session as the server describes it (PROTOCOL.md §4.1).
 * @typedef {{key: string, created: Date, lastLookup: Date, info: Record<string, unknown>}} Session
 */

/**
 * An RFC 3339 time as Go writes it (up to nine fraction digits), cut to milliseconds
 * first: not every engine's Date parses more than three digits.
 * @param {string} text
 */
function rfc3339(text) {
  return new Date(text.replace(/(\.\d{3})\d+/, '$1'));
}

/**
 * Parses the session JSON of NotifySessionCreated and of a restore reply.
 * @param {string} text
 * @returns {Session}
 */
export function parseSession(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    throw new ProtocolError('session is not JSON');
  }
  if (value === null || typeof value !== 'object' || typeof value.k !== 'string' || value.k === '') {
    throw new ProtocolError('session without a key');
  }
  if (typeof value.c !== 'string' || typeof value.l !== 'string') {
    throw new ProtocolError('session without its times');
  }
  const created = rfc3339(value.c);
  const lastLookup = rfc3339(value.l);
  if (Number.isNaN(created.getTime()) || Number.isNaN(lastLookup.getTime())) {
    throw new ProtocolError('session times are not RFC 3339');
  }
  const info = value.i ?? {};
  if (info === null || typeof info !== 'object' || Array.isArray(info)) {
    throw new ProtocolError('session info is not an object');
  }
  return { key: value.k, created, lastLookup, info };
}

// ---------------------------------------------------------------------------------------
// The topics extension (docs/topics.md): subscriptions, positions, recovery

/** The WebSocket sub-protocol that negotiates the topics extension. */
export const TOPICS_SUBPROTOCOL = 'webwire.topics.1';

const TOPIC_STATUS = ['subscribed', 'recovered', 'not_recovered', 'no_history'];
const MAX_TOPIC_LEN = 1024;

/**
 * A position in a topic: `epoch` as the 16 hex digits of its 8 wire bytes, `offset` a
 * number (exact up to 2^53).
 * @typedef {{epoch: string, offset: number}} Position
 */

/** @param {DataView} view @param {number} at @returns {Position} */
function readPosition(view, at) {
  const epoch = Array.from(new Uint8Array(view.buffer, view.byteOffset + at, 8), (b) => b.toString(16).padStart(2, '0')).join('');
  const offset = view.getBigUint64(at + 8, true);
  if (offset > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolError('topic offset beyond 2^53');
  return { epoch, offset: Number(offset) };
}

/** @param {Uint8Array} out @param {number} at @param {Position} position */
function writePosition(out, at, position) {
  if (!/^[0-9a-f]{16}$/.test(position.epoch)) throw new TypeError('an epoch is 16 hex digits');
  for (let i = 0; i < 8; i++) out[at + i] = parseInt(position.epoch.slice(2 * i, 2 * i + 2), 16);
  new DataView(out.buffer, out.byteOffset).setBigUint64(at + 8, BigInt(position.offset), true);
}

/** @param {Uint8Array} bytes */
function topicText(bytes) {
  if (bytes.length === 0 || bytes.length > MAX_TOPIC_LEN) throw new ProtocolError('a topic is 1 to 1024 bytes');
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new ProtocolError('a topic is UTF-8');
  }
}

/**
 * The payload of a `ww.subscribe` request: flags, the position to resume after (if any),
 * the topic.
 * @param {string} topic @param {Position | null} [resume] @returns {Uint8Array}
 */
export function encodeSubscribe(topic, resume = null) {
  const name = utf8Encoder.encode(topic);
  if (name.length === 0 || name.length > MAX_TOPIC_LEN) throw new TypeError('a topic is 1 to 1024 bytes');
  const head = resume ? 17 : 1;
  const out = new Uint8Array(head + name.length);
  out[0] = resume ? 1 : 0;
  if (resume) writePosition(out, 1, resume);
  out.set(name, head);
  return out;
}

/**
 * Reads a `ww.subscribe` request's payload.
 * @param {Uint8Array} bytes @returns {{topic: string, resume: Position | null}}
 */
export function parseSubscribe(bytes) {
  if (bytes.length < 1 || bytes[0] > 1) throw new ProtocolError('subscribe: bad flags');
  const head = bytes[0] === 1 ? 17 : 1;
  if (bytes.length < head) throw new ProtocolError('subscribe: truncated position');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return { topic: topicText(bytes.subarray(head)), resume: head === 17 ? readPosition(view, 1) : null };
}

/**
 * Reads the answer to a `ww.subscribe` request (17 bytes).
 * @param {Uint8Array} bytes @returns {{status: string, position: Position}}
 */
export function parseSubscribed(bytes) {
  if (bytes.length !== 17) throw new ProtocolError(`a subscribe answer is 17 bytes, not ${bytes.length}`);
  const status = TOPIC_STATUS[bytes[0]];
  if (status === undefined) throw new ProtocolError(`unknown subscribe status ${bytes[0]}`);
  return { status, position: readPosition(new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength), 1) };
}

/**
 * Reads a `ww.pub` signal's payload: the topic, the position (null without history), and
 * the published signal, a whole v2.0 signal message, parsed.
 * @param {Uint8Array} bytes @returns {{topic: string, position: Position | null, signal: Message}}
 */
export function parsePublication(bytes) {
  if (bytes.length < 1 || bytes[0] > 1) throw new ProtocolError('publication: bad flags');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = 1;
  let position = null;
  if (bytes[0] === 1) {
    if (bytes.length < 17) throw new ProtocolError('publication: truncated position');
    position = readPosition(view, 1);
    at = 17;
  }
  if (bytes.length < at + 2) throw new ProtocolError('publication: truncated');
  const len = view.getUint16(at, true);
  at += 2;
  if (bytes.length < at + len) throw new ProtocolError('publication: topic past the end');
  const topic = topicText(bytes.subarray(at, at + len));
  const signal = parse(bytes.subarray(at + len));
  if (!signal.kind.startsWith('Signal')) throw new ProtocolError(`a publication carries a signal, not ${signal.kind}`);
  return { topic, position, signal };
}

// ---------------------------------------------------------------------------------------
// Client

/**
 * @typedef {object} ClientOptions
 * @property {typeof WebSocket} [WebSocket] the WebSocket constructor (default: the global
 *   one; under Node 20 pass the `ws` package's).
 * @property {boolean} [topics] speak the topics extension (docs/topics.md): offer the
 *   sub-protocol `webwire.topics.1` (a server that does not select it fails the handshake)
 *   and allow `subscribe`.
 * @property {boolean} [autoconnect] connect at once, and whenever a request or signal
 *   needs a connection (default true). With false, only `connect()` connects (and a
 *   failed `connect()` is not retried; a lost connection is, with `reconnect`).
 * @property {boolean | {minDelay?: number, maxDelay?: number}} [reconnect] reconnect after
 *   a lost connection, with exponential backoff between `minDelay` (default 250 ms) and
 *   `maxDelay` (default 10 000 ms), and restore the session (default true). Both are
 *   numbers >= 0 (else a TypeError) and at least `MIN_RECONNECT_DELAY` (10 ms).
 * @property {number} [requestTimeout] default timeout of requests in ms (default 60 000).
 * @property {number} [connectTimeout] how long a connection attempt may take, handshake
 *   included, in ms (default 10 000).
 * @property {string | null} [subProtocol] the server's sub-protocol name must equal this
 *   (default null: the server must advertise none).
 * @property {boolean | Pick<Storage, 'getItem' | 'setItem' | 'removeItem'>} [persistSession]
 *   keep the session key across page loads: true for `localStorage`, or a Storage-like
 *   object (default false).
 * @property {string} [storageKey] the key under which the session is kept (default
 *   `webwire-session:` + the URL).
 */

// The longest delay timers take: a longer one fires at once (browsers and Node alike).
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Checks a timeout option: a number >= 0, or Infinity (no timeout). NaN, negative numbers
 * and non-numbers throw, as a NaN timer would otherwise fire at once or never.
 * @param {unknown} ms @param {string} what
 * @returns {number}
 */
function checkTimeout(ms, what) {
  if (typeof ms !== 'number' || !(ms >= 0)) throw new TypeError(`${what} must be a number >= 0 or Infinity, not ${String(ms)}`);
  return ms;
}

/**
 * Starts a timer of `ms`, clamped to what timers take; Infinity starts none. With
 * `unref`, under Node the timer does not keep the process alive (a script that forgets
 * `close()` still exits).
 * @param {() => void} fn @param {number} ms @param {boolean} [unref]
 * @returns {ReturnType<typeof setTimeout> | undefined}
 */
function startTimer(fn, ms, unref = false) {
  if (!Number.isFinite(ms)) return undefined;
  const timer = setTimeout(fn, Math.min(Math.max(ms, 0), MAX_TIMER_MS));
  // @ts-ignore: Node's Timeout has unref(), a browser's numeric id does not.
  if (unref && typeof timer?.unref === 'function') timer.unref();
  return timer;
}

// The shortest reconnect delay, whatever the options say: an attempt refused at once would
// otherwise be retried in a busy loop (the Rust client's `Backoff::FLOOR`).
const MIN_RECONNECT_DELAY = 10;

const DEFAULTS = {
  autoconnect: true,
  requestTimeout: 60_000,
  connectTimeout: 10_000,
  minDelay: 250,
  maxDelay: 10_000,
};

/**
 * A WebWire client: one connection to one server, re-established after losses.
 *
 * Events (an `EventTarget`; `on(type, listener)` is a shortcut that returns the function
 * that removes the listener):
 * - `connect`: connected (and the session restored, if there was one to restore);
 * - `disconnect`: the connection is gone; `detail: {error, reconnecting}`;
 * - `signal`: a server signal; `detail: {name, payload}` (payload is a `Payload`);
 * - `sessioncreated`: `detail: {session, restored}`;
 * - `sessionclosed`: `detail: {reason}` ('server', 'closed' or 'restore-failed').
 * - `publication` (topics extension): `detail: {topic, position, name, payload}`, once per
 *   publication of a subscribed topic, in order (`position` null without history);
 * - `topic-recovered`: after a reconnection, per topic, `detail: {topic, recovered, status,
 *   position}`: recovered means every publication missed came before this event (a live
 *   one, after `position`, may too);
 * - `topic-ended`: `detail: {topic, error}`: the server refused the subscription again.
 */
export class WebWireClient extends EventTarget {
  /** @type {string} */ #url;
  /** @type {typeof WebSocket} */ #WebSocket;
  #autoconnect;
  #reconnect;
  #minDelay;
  #maxDelay;
  #requestTimeout;
  #connectTimeout;
  /** @type {string | null} */ #subProtocol;
  // The topics extension: offered at every connection when on.
  #topicsOn = false;
  /** @type {Map<string, {position: Position | null}>} subscribed topics, last position seen */ #topics = new Map();
  /** @type {Pick<Storage, 'getItem' | 'setItem' | 'removeItem'> | null} */ #storage = null;
  #storageKey;

  /** @type {'idle' | 'connecting' | 'connected' | 'reconnecting' | 'closed'} */ #state = 'idle';
  /** @type {WebSocket | null} */ #socket = null;
  /** @type {Promise<void> | null} */ #connecting = null;
  // Fails the handshake in progress at once (close() during connect).
  /** @type {((error: Error) => void) | null} */ #cancelHandshake = null;
  #attempt = 0;
  /** @type {ReturnType<typeof setTimeout> | undefined} */ #retryTimer;
  /** @type {ReturnType<typeof setTimeout> | undefined} */ #heartbeatTimer;
  #heartbeatPeriod = 0;
  #limit = Infinity;
  // While a session is restored after connecting, the application's messages wait, so that
  // they are handled with the session.
  #restoring = false;
  /** @type {Session | null} */ #session = null;
  // Per client: ids are unique within the client's connections (§3), starting at 1.
  #nextId = 1;
  /** @type {Map<number, Pending>} requests sent, waiting for their reply */ #pending = new Map();
  // Session requests whose caller gave up (timeout, abort) after they were sent: their
  // reply still comes, and is applied unless the session changed since (see #reply).
  /** @type {Map<number, {apply: (payload: Payload) => void, epoch: number}>} */ #late = new Map();
  // Counts session changes (created, restored) and session requests sent: a late reply
  // applies only while it is the same as when its request was sent.
  #sessionEpoch = 0;
  /** @type {Set<Queued>} requests and signals waiting for a connection */ #queue = new Set();

  /**
   * @param {string} url `ws://`, `wss://`, `http(s)://` (turned into `ws(s)://`), or a path
   *   resolved against the page's location.
   * @param {ClientOptions} [options]
   */
  constructor(url, options = {}) {
    super();
    this.#url = resolveUrl(url);
    const WS = options.WebSocket ?? globalThis.WebSocket;
    if (typeof WS !== 'function') {
      throw new TypeError('no WebSocket: pass the constructor as the `WebSocket` option (e.g. from the ws package)');
    }
    this.#WebSocket = WS;
    this.#autoconnect = options.autoconnect ?? DEFAULTS.autoconnect;
    const reconnect = options.reconnect ?? true;
    this.#reconnect = reconnect !== false;
    // Checked like timeouts (a negative or NaN delay would retry at once, in a loop), raised
    // to the floor, and clamped to the longest timer (a longer one would fire at once).
    const delay = (/** @type {'minDelay' | 'maxDelay'} */ which) => {
      const ms = checkTimeout((typeof reconnect === 'object' ? reconnect[which] : undefined) ?? DEFAULTS[which], `reconnect.${which}`);
      return Math.min(Math.max(ms, MIN_RECONNECT_DELAY), MAX_TIMER_MS);
    };
    this.#minDelay = delay('minDelay');
    this.#maxDelay = Math.max(this.#minDelay, delay('maxDelay'));
    this.#requestTimeout = checkTimeout(options.requestTimeout ?? DEFAULTS.requestTimeout, 'requestTimeout');
    this.#connectTimeout = checkTimeout(options.connectTimeout ?? DEFAULTS.connectTimeout, 'connectTimeout');
    this.#subProtocol = options.subProtocol ?? null;
    this.#topicsOn = options.topics === true;
    if (options.persistSession === true) {
      try {
        this.#storage = globalThis.localStorage ?? null;
      } catch {
        // Reading localStorage throws where the page may not use it (sandboxed frames,
        // blocked cookies): said below, as when there is none at all.
      }
      if (this.#storage === null) throw new TypeError('persistSession: true needs localStorage, which is not available here');
    } else if (options.persistSession) {
      this.#storage = options.persistSession;
    }
    this.#storageKey = options.storageKey ?? `webwire-session:${this.#url}`;
    if (this.#autoconnect) this.connect().catch(() => {});
  }

  /** The server's URL. */
  get url() {
    return this.#url;
  }

  /**
   * 'idle' (not connected, not trying), 'connecting', 'connected', 'reconnecting' (waiting
   * for the next attempt) or 'closed' (by `close()`).
   */
  get state() {
    return this.#state;
  }

  /** Whether the client is connected now. */
  get connected() {
    return this.#state === 'connected';
  }

  /** The current session, or null. @returns {Session | null} */
  get session() {
    return this.#session;
  }

  /** The largest message the server accepts (from its handshake; Infinity before). */
  get messageSizeLimit() {
    return this.#limit;
  }

  /** The heartbeat period in ms (75 % of the server's read timeout; 0 before connecting). */
  get heartbeatPeriod() {
    return this.#heartbeatPeriod;
  }

  /**
   * Adds `listener` for `type`; returns the function that removes it.
   * @param {string} type @param {(event: CustomEvent) => void} listener
   */
  on(type, listener) {
    this.addEventListener(type, /** @type {EventListener} */ (listener));
    return () => this.off(type, listener);
  }

  /** Removes `listener` for `type`. @param {string} type @param {(event: CustomEvent) => void} listener */
  off(type, listener) {
    this.removeEventListener(type, /** @type {EventListener} */ (listener));
  }

  /**
   * Connects, if not connected: resolves once the handshake is done and a known session
   * restored; rejects if this attempt fails. Attempts go on in the background (with
   * reconnecting on) after a lost connection, or after a failed first attempt when the
   * client connects by itself (autoconnect); with autoconnect off, a failed `connect()`
   * leaves the client idle. A client closed with `close()` can connect again.
   * @returns {Promise<void>}
   */
  connect() {
    if (this.#state === 'connected') return Promise.resolve();
    if (this.#connecting) return this.#connecting;
    const retry = this.#state === 'reconnecting';
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    this.#state = 'connecting';
    const attempt = this.#dial(retry || this.#autoconnect).finally(() => {
      if (this.#connecting === attempt) this.#connecting = null;
    });
    this.#connecting = attempt;
    return attempt;
  }

  /**
   * Sends a request; resolves with the reply's `Payload`, rejects with a `WebWireError`.
   * A request made while disconnected waits for the connection (if the client connects
   * by itself or is connecting), up to its timeout.
   * @param {string} name printable ASCII, at most 255 bytes ('' for none)
   * @param {unknown} [payload] see `toPayload`
   * @param {{timeout?: number, signal?: AbortSignal, encoding?: Encoding}} [options]
   * @returns {Promise<Payload>}
   */
  request(name, payload, options = {}) {
    return new Promise((resolve, reject) => {
      const body = toPayload(payload, options.encoding);
      const type = FAMILY_BASE.Request + ENCODINGS.indexOf(body.encoding);
      // Checked now, so that a bad name fails here and not at sending time.
      const frame = encode({ kind: /** @type {string} */ (KIND_OF_TYPE.get(type)), id: new Uint8Array(8), name, payload: body });
      this.#submit(frame, true, options, resolve, reject);
    });
  }

  /**
   * Sends a signal (one-way). Resolves once it is handed to the connection; waits for a
   * connection like a request does.
   * @param {string} name @param {unknown} [payload]
   * @param {{timeout?: number, signal?: AbortSignal, encoding?: Encoding}} [options]
   * @returns {Promise<void>}
   */
  signal(name, payload, options = {}) {
    return new Promise((resolve, reject) => {
      const body = toPayload(payload, options.encoding);
      const type = FAMILY_BASE.Signal + ENCODINGS.indexOf(body.encoding);
      const frame = encode({ kind: /** @type {string} */ (KIND_OF_TYPE.get(type)), name, payload: body });
      this.#submit(frame, false, options, () => resolve(), reject);
    });
  }

  /**
   * Sends a contract request: `value` as UTF-8 JSON (whatever its type), the reply read as
   * JSON. With a contract type generated from the server's Rust types
   * (`WebWireClient<Contract>`, see README), TypeScript checks the name, the value and the
   * reply against them.
   * @param {string} name @param {unknown} value
   * @param {{timeout?: number, signal?: AbortSignal}} [options]
   * @returns {Promise<any>}
   */
  async call(name, value, options = {}) {
    const reply = await this.request(name, Payload.utf8(JSON.stringify(value ?? null)), options);
    return reply.json();
  }

  /**
   * Sends a contract signal: `value` as UTF-8 JSON (whatever its type).
   * @param {string} name @param {unknown} value
   * @param {{timeout?: number, signal?: AbortSignal}} [options]
   * @returns {Promise<void>}
   */
  emit(name, value, options = {}) {
    return this.signal(name, Payload.utf8(JSON.stringify(value ?? null)), options);
  }

  /**
   * Restores the session `key` (e.g. one kept by the page itself); waits for a connection
   * like a request. Rejects with `SessionNotFoundError` and the other session errors. If it
   * times out (or is aborted) after the request was sent, the server's late success is
   * still applied (`sessioncreated`), unless the session changed since (see #reply).
   * @param {string} key
   * @param {{timeout?: number, signal?: AbortSignal}} [options]
   * @returns {Promise<Session>}
   */
  async restoreSession(key, options = {}) {
    const active = () => new WebWireError('session_active', 'a session is active: close it first');
    if (this.#session !== null) throw active();
    // Checked again when the request is sent: while it waited for a connection, the
    // client may have restored its own session.
    const reply = await this.#restoreRequest(key, options, false, () => (this.#session !== null ? active() : null));
    const session = parseSession(reply.text());
    this.#setSession(session, true);
    return session;
  }

  /**
   * Closes the current session on the server (logs out) and forgets it. Offline, only
   * forgets it. If it times out (or is aborted) after the request was sent, the server's
   * late confirmation still forgets it (`sessionclosed`), unless the session changed since.
   * @param {{timeout?: number, signal?: AbortSignal}} [options]
   * @returns {Promise<void>}
   */
  async closeSession(options = {}) {
    if (this.#session === null) return;
    if (this.connected) {
      // Given up (timeout, abort) once sent, its late confirmation still logs out, unless
      // a newer session came first.
      const late = () => this.#clearSession('closed');
      await new Promise((resolve, reject) => {
        this.#submit(encode({ kind: 'RequestCloseSession', id: new Uint8Array(8) }), true, options, resolve, reject, false, undefined, late);
      });
    }
    this.#clearSession('closed');
  }

  /**
   * Closes the connection for good (until `connect()` is called again): no reconnecting;
   * requests waiting or in flight are rejected with `DisconnectedError`.
   */
  close() {
    const wasConnected = this.#state === 'connected';
    this.#state = 'closed';
    clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    const socket = this.#socket;
    // Forgotten first: its close event and a handshake in progress are no longer ours.
    this.#socket = null;
    const error = new DisconnectedError('closed by the client');
    // The attempt in progress fails now, not when its socket reports the close: a
    // connect() right after this one starts afresh instead of returning that attempt.
    this.#connecting = null;
    this.#cancelHandshake?.(error);
    this.#lost(error, { reconnect: false, announce: wasConnected });
    this.#failQueue(error);
    if (socket) closeQuietly(socket, 1000);
  }

  // -------------------------------------------------------------------------------------

  /**
   * @param {Uint8Array} frame the encoded message; requests get their id at sending time
   * @param {boolean} isRequest
   * @param {{timeout?: number, signal?: AbortSignal}} options
   * @param {(value: any) => void} resolve @param {(error: Error) => void} reject
   * @param {boolean} [internal] the restore request, sent before the queue
   * @param {() => Error | null} [beforeSend] checked when the message is about to be sent:
   *   an error rejects it instead
   * @param {(payload: Payload) => void} [late] a session request's: applies its successful
   *   reply if it comes after the caller gave up (timeout, abort), and the session has not
   *   changed since it was sent
   */
  #submit(frame, isRequest, options, resolve, reject, internal = false, beforeSend = undefined, late = undefined) {
    const abort = options.signal;
    if (abort?.aborted) {
      reject(new AbortError(abort.reason));
      return;
    }
    if (frame.length > this.#limit) {
      reject(new LimitError(frame.length, this.#limit));
      return;
    }
    const timeoutMs = options.timeout ?? this.#requestTimeout;
    try {
      checkTimeout(timeoutMs, 'timeout');
    } catch (error) {
      reject(/** @type {TypeError} */ (error));
      return;
    }
    /** @type {Queued} */
    const job = { frame, isRequest, resolve, reject, beforeSend, late, epoch: 0, id: 0, settled: false, cleanup: () => {} };
    // The caller gives up: a session request that left still gets its reply, applied then.
    const giveUp = (/** @type {Error} */ error) => {
      const sent = !job.settled && job.id !== 0;
      finish(error);
      if (sent && job.late) this.#late.set(job.id, { apply: job.late, epoch: job.epoch });
    };
    // An infinite timeout waits forever; a huge one is clamped, not turned into "at once".
    const timer = startTimer(() => giveUp(new TimeoutError(timeoutMs)), timeoutMs);
    const onAbort = () => giveUp(new AbortError(abort?.reason));
    abort?.addEventListener('abort', onAbort, { once: true });
    const finish = (/** @type {Error} */ error) => {
      if (job.settled) return;
      job.settled = true;
      job.cleanup();
      reject(error);
    };
    job.cleanup = () => {
      clearTimeout(timer);
      abort?.removeEventListener('abort', onAbort);
      this.#queue.delete(job);
      if (job.id !== 0) this.#pending.delete(job.id);
    };
    job.reject = finish;
    job.resolve = (value) => {
      if (job.settled) return;
      job.settled = true;
      job.cleanup();
      resolve(value);
    };
    if (this.#state === 'connected' && (internal || !this.#restoring)) {
      this.#send(job);
      return;
    }
    if (internal) {
      // The restore of a connection attempt belongs to that connection: never queued.
      finish(new DisconnectedError('lost while connecting'));
      return;
    }
    if (this.#state === 'connecting' || this.#state === 'reconnecting' || (this.#state === 'connected' && this.#restoring)) {
      this.#queue.add(job);
      return;
    }
    if (this.#autoconnect && this.#state === 'idle') {
      this.#queue.add(job);
      this.connect().catch(() => {});
      return;
    }
    finish(new DisconnectedError('not connected'));
  }

  /** Sends `job` on the open connection. @param {Queued} job */
  #send(job) {
    const refused = job.beforeSend?.();
    if (refused) {
      job.reject(refused);
      return;
    }
    if (job.frame.length > this.#limit) {
      job.reject(new LimitError(job.frame.length, this.#limit));
      return;
    }
    if (job.isRequest) {
      job.id = this.#nextId++;
      if (job.late) job.epoch = ++this.#sessionEpoch;
      job.frame.set(idBytes(job.id), 1);
      this.#pending.set(job.id, job);
    }
    this.#write(job.frame);
    if (!job.isRequest) job.resolve(undefined);
  }

  /** @param {Uint8Array} frame */
  #write(frame) {
    this.#socket?.send(frame);
    // Any message counts as activity for the server: the heartbeat waits a full period again.
    this.#armHeartbeat();
  }

  #armHeartbeat() {
    clearTimeout(this.#heartbeatTimer);
    if (this.#heartbeatPeriod > 0 && this.#state === 'connected') {
      this.#heartbeatTimer = startTimer(() => this.#write(encode({ kind: 'Heartbeat' })), this.#heartbeatPeriod, true);
    }
  }

  /**
   * One connection attempt: socket, AcceptConf, session restore, then the queue is sent.
   * @param {boolean} mayRetry whether a failed attempt is followed by another (with
   *   reconnecting on)
   */
  async #dial(mayRetry) {
    let socket;
    try {
      socket = this.#topicsOn ? new this.#WebSocket(this.#url, [TOPICS_SUBPROTOCOL]) : new this.#WebSocket(this.#url);
    } catch (cause) {
      // The constructor refused (a SecurityError, a bad URL): it would refuse every retry
      // too, so there is none, and connect() rejects with its error.
      this.#lost(new DisconnectedError(`cannot connect to ${redactUrl(this.#url)}`, { cause }), { reconnect: false, announce: false });
      throw cause;
    }
    socket.binaryType = 'arraybuffer';
    this.#socket = socket;
    try {
      const conf = await this.#handshake(socket);
      if (this.#socket !== socket) throw new DisconnectedError('closed while connecting');
      this.#limit = conf.messageBufferSize;
      // 75 % of the read timeout (§1.5): never NaN (webwire-js's defect), and clamped, as
      // a timer beyond the maximum would fire at once, every time. A server without read
      // timeout (0) gets no heartbeats.
      this.#heartbeatPeriod = Math.min(Math.floor((conf.readTimeout * 3) / 4), MAX_TIMER_MS);
      this.#state = 'connected';
      this.#armHeartbeat();
      const key = this.#session?.key ?? this.#storedKey();
      if (key || (this.#topicsOn && this.#topics.size > 0)) {
        this.#restoring = true;
        try {
          if (key) await this.#restoreAfterConnect(key);
          // After the session (the server may authorise by it), before the application's
          // waiting messages: what was missed comes first.
          if (this.#topicsOn) await this.#resubscribe(socket);
        } finally {
          this.#restoring = false;
        }
      }
      if (this.#socket !== socket || this.#state !== 'connected') throw new DisconnectedError('lost while connecting');
    } catch (error) {
      if (this.#socket === socket) {
        this.#socket = null;
        closeQuietly(socket, error instanceof ProtocolError ? 1002 : 1000);
        // A failed attempt is announced only if the connection had been up (a restore
        // that failed on a lost connection); otherwise the next attempt just follows.
        const wasConnected = this.#state === 'connected';
        this.#lost(asWebWireError(error), { reconnect: mayRetry || wasConnected, announce: wasConnected });
      }
      throw error;
    }
    this.#attempt = 0;
    // The waiting messages first: what a `connect` listener sends comes after them.
    for (const job of [...this.#queue]) {
      if (this.#state !== 'connected') break;
      this.#queue.delete(job);
      this.#send(job);
    }
    this.dispatchEvent(new CustomEvent('connect'));
  }

  /**
   * Waits for the socket to open and the AcceptConf to arrive, then hands the socket to
   * the message handler.
   * @param {WebSocket} socket
   * @returns {Promise<Message>}
   */
  #handshake(socket) {
    return new Promise((resolve, reject) => {
      // connectTimeout Infinity: no timer (a timer of Infinity ms would fire at once).
      const timer = startTimer(() => fail(new DisconnectedError(`no handshake within ${this.#connectTimeout} ms`)), this.#connectTimeout);
      const fail = (/** @type {Error} */ error) => {
        clearTimeout(timer);
        if (this.#cancelHandshake === fail) this.#cancelHandshake = null;
        socket.onmessage = null;
        socket.onclose = null;
        reject(error);
      };
      this.#cancelHandshake = fail;
      socket.onerror = () => {};
      socket.onclose = (event) => fail(new DisconnectedError(`connection closed during the handshake (${event.code})`));
      socket.onmessage = (event) => {
        clearTimeout(timer);
        try {
          const conf = parse(frameOf(event.data));
          if (conf.kind !== 'AcceptConf') throw new ProtocolError(`expected AcceptConf, got ${conf.kind}`);
          if (conf.major !== 2) throw new ProtocolError(`protocol version ${conf.major}.${conf.minor}: only 2.x is spoken`);
          // Compared as bytes: a lossy decode would let invalid UTF-8 pass for U+FFFD.
          const expected = this.#subProtocol === null ? null : utf8Encoder.encode(this.#subProtocol);
          if (!sameBytes(conf.subProtocol, expected)) {
            const sub = conf.subProtocol === null ? null : utf8Decoder.decode(conf.subProtocol);
            throw new ProtocolError(`sub-protocol ${JSON.stringify(sub)}, expected ${JSON.stringify(this.#subProtocol)}`);
          }
          if (this.#cancelHandshake === fail) this.#cancelHandshake = null;
          socket.onmessage = (e) => this.#onMessage(socket, e.data);
          socket.onclose = (e) => this.#onClose(socket, e);
          resolve(conf);
        } catch (error) {
          fail(error instanceof ProtocolError ? error : new ProtocolError(String(error)));
        }
      };
    });
  }

  /** @param {string} key */
  async #restoreAfterConnect(key) {
    let reply;
    try {
      reply = await this.#restoreRequest(key, {}, true);
    } catch (error) {
      const kind = error instanceof WebWireError ? error.kind : '';
      // A frame that does not parse (kind 'protocol') has closed the connection already.
      if (kind === 'disconnected' || kind === 'shutdown' || kind === 'timeout' || kind === 'protocol') throw error;
      // The server refused the key (not found, disabled, limit, internal error): forget it,
      // as the reference clients do, and carry on without a session.
      this.#clearSession('restore-failed');
      return;
    }
    let session;
    try {
      session = parseSession(reply.text());
    } catch {
      // A well-formed reply whose session does not parse restores nothing either: the key
      // is forgotten the same way. (Closing and reconnecting would only restore it again,
      // get the same reply, and loop.)
      this.#clearSession('restore-failed');
      return;
    }
    this.#setSession(session, true);
  }

  /**
   * Sends a restore request for `key`; resolves with the reply's payload (the session
   * JSON). The one after a connect is `internal`: sent at once while the queue waits for
   * it; the application's waits for a connection like a request.
   * @param {string} key @param {{timeout?: number, signal?: AbortSignal}} options
   * @param {boolean} internal @param {() => Error | null} [beforeSend]
   * @returns {Promise<Payload>}
   */
  #restoreRequest(key, options, internal, beforeSend) {
    const frame = encode({ kind: 'RequestRestoreSession', id: new Uint8Array(8), key });
    return new Promise((resolve, reject) => {
      this.#submit(frame, true, options, resolve, reject, internal, beforeSend, (payload) => this.#lateRestore(payload));
    });
  }

  /**
   * The reply to a restore whose caller gave up: the server restored the session, so the
   * page takes it too (a reply that is not a session changes nothing).
   * @param {Payload} payload
   */
  #lateRestore(payload) {
    let session;
    try {
      session = parseSession(payload.text());
    } catch {
      return;
    }
    this.#setSession(session, true);
  }

  /**
   * Hands the reply to request `id` to its requester; or, if the requester gave up on a
   * session request, applies a successful one unless the session changed since the
   * request was sent: a late reply never overwrites a newer session.
   * @param {Uint8Array} id @param {Payload | null} payload @param {Error} [error]
   */
  #reply(id, payload, error) {
    const key = idNumber(id);
    const job = this.#pending.get(key);
    if (job) {
      if (error) job.reject(error);
      else job.resolve(payload);
      return;
    }
    const late = this.#late.get(key);
    if (!late) return;
    this.#late.delete(key);
    if (!error && payload && late.epoch === this.#sessionEpoch) late.apply(payload);
  }

  /** @param {WebSocket} socket @param {unknown} data */
  #onMessage(socket, data) {
    if (this.#socket !== socket) return;
    let msg;
    try {
      msg = parse(frameOf(data));
    } catch (error) {
      this.#protocolError(socket, asWebWireError(error));
      return;
    }
    switch (msg.kind) {
      case 'ReplyBinary':
      case 'ReplyUtf8':
      case 'ReplyUtf16':
        this.#reply(msg.id, msg.payload);
        return;
      case 'ReplyError':
        this.#reply(msg.id, null, new ReplyError(msg.code, msg.message));
        return;
      case 'ReplyShutdown':
        this.#reply(msg.id, null, new ShutdownError());
        return;
      case 'ReplyInternalError':
        this.#reply(msg.id, null, new InternalError());
        return;
      case 'ReplySessionNotFound':
        this.#reply(msg.id, null, new SessionNotFoundError());
        return;
      case 'ReplyMaxSessConnsReached':
        this.#reply(msg.id, null, new MaxSessionConnectionsError());
        return;
      case 'ReplySessionsDisabled':
        this.#reply(msg.id, null, new SessionsDisabledError());
        return;
      case 'SignalBinary':
        if (this.#topicsOn && msg.name === 'ww.pub') {
          this.#onPublication(socket, msg.payload.data);
          return;
        }
      // falls through
      case 'SignalUtf8':
      case 'SignalUtf16':
        this.dispatchEvent(new CustomEvent('signal', { detail: { name: msg.name, payload: msg.payload } }));
        return;
      case 'NotifySessionCreated': {
        let session;
        try {
          session = parseSession(msg.session);
        } catch (error) {
          this.#protocolError(socket, asWebWireError(error));
          return;
        }
        this.#setSession(session, false);
        return;
      }
      case 'NotifySessionClosed':
        this.#clearSession('server');
        return;
      default:
      // Well-formed messages a server does not send (requests, heartbeats, a second
      // AcceptConf) are ignored, as the reference clients do (§2.6).
    }
  }

  /**
   * A publication: dispatched as a 'publication' event once, in order; one at or below
   * the topic's last position is a duplicate and dropped, one of a topic not subscribed
   * is ignored.
   * @param {WebSocket} socket @param {Uint8Array} data
   */
  #onPublication(socket, data) {
    let publication;
    try {
      publication = parsePublication(data);
    } catch (error) {
      this.#protocolError(socket, asWebWireError(error));
      return;
    }
    const entry = this.#topics.get(publication.topic);
    if (!entry) return;
    const { position } = publication;
    if (position && entry.position && position.epoch === entry.position.epoch && position.offset <= entry.position.offset) return;
    if (position) entry.position = position;
    const { name, payload } = publication.signal;
    this.dispatchEvent(new CustomEvent('publication', { detail: { topic: publication.topic, position, name, payload } }));
  }

  /**
   * Subscribes to `topic` through the topics extension (the client must have been made
   * with `{topics: true}`): its publications arrive as 'publication' events, and after a
   * reconnection the client subscribes again from the last position seen, telling the
   * application with a 'topic-recovered' event. Resolves with the server's answer.
   * @param {string} topic @param {{timeout?: number, signal?: AbortSignal}} [options]
   * @returns {Promise<{status: string, position: Position}>}
   */
  async subscribe(topic, options = {}) {
    if (!this.#topicsOn) throw new TypeError('subscribe needs a client made with {topics: true}');
    if (this.#topics.has(topic)) throw new TypeError(`already subscribed to ${topic}`);
    const payload = Payload.binary(encodeSubscribe(topic));
    // Known before the request leaves: live publications may precede the answer.
    this.#topics.set(topic, { position: null });
    try {
      const reply = await this.request('ww.subscribe', payload, options);
      const answer = parseSubscribed(reply.data);
      this.#answered(topic, answer);
      return answer;
    } catch (error) {
      this.#topics.delete(topic);
      throw error;
    }
  }

  /**
   * Ends the subscription to `topic`.
   * @param {string} topic @param {{timeout?: number, signal?: AbortSignal}} [options]
   */
  async unsubscribe(topic, options = {}) {
    if (!this.#topics.delete(topic)) return;
    await this.request('ww.unsubscribe', Payload.binary(utf8Encoder.encode(topic)), options);
  }

  /** The topics subscribed, with the last position seen. @returns {Map<string, Position | null>} */
  get topics() {
    return new Map([...this.#topics].map(([topic, entry]) => [topic, entry.position]));
  }

  /** @param {string} topic @param {{status: string, position: Position}} answer */
  #answered(topic, answer) {
    const entry = this.#topics.get(topic);
    if (!entry || answer.status === 'no_history') return;
    const seen = entry.position;
    if (!(seen && seen.epoch === answer.position.epoch && seen.offset >= answer.position.offset)) entry.position = answer.position;
  }

  /**
   * After a reconnection: every topic again, from its last position; a 'topic-recovered'
   * event per topic (after the publications it recovered). A lost connection throws (the
   * next attempt tries again); a refusal ends that subscription ('topic-ended').
   * @param {WebSocket} socket
   */
  async #resubscribe(socket) {
    for (const [topic, entry] of [...this.#topics]) {
      const frame = encode({ kind: 'RequestBinary', id: new Uint8Array(8), name: 'ww.subscribe', payload: Payload.binary(encodeSubscribe(topic, entry.position)) });
      let answer;
      try {
        const reply = await new Promise((resolve, reject) => this.#submit(frame, true, {}, resolve, reject, true));
        answer = parseSubscribed(/** @type {Payload} */ (reply).data);
      } catch (error) {
        const kind = error instanceof WebWireError ? error.kind : '';
        if (kind === 'disconnected' || kind === 'shutdown' || kind === 'timeout' || kind === 'protocol' || this.#socket !== socket) throw error;
        this.#topics.delete(topic);
        this.dispatchEvent(new CustomEvent('topic-ended', { detail: { topic, error } }));
        continue;
      }
      this.#answered(topic, answer);
      const recovered = answer.status !== 'not_recovered';
      this.dispatchEvent(new CustomEvent('topic-recovered', { detail: { topic, recovered, status: answer.status, position: answer.position } }));
    }
  }

  /** A message that does not parse: the connection cannot be trusted any more. @param {WebSocket} socket @param {WebWireError} error */
  #protocolError(socket, error) {
    this.#socket = null;
    closeQuietly(socket, 1002);
    this.#lost(error, { reconnect: true, announce: true });
  }

  /** @param {WebSocket} socket @param {CloseEvent} event */
  #onClose(socket, event) {
    if (this.#socket !== socket) return;
    this.#socket = null;
    const reason = event.reason ? `: ${event.reason}` : '';
    this.#lost(new DisconnectedError(`connection closed (${event.code}${reason})`), { reconnect: true, announce: true });
  }

  /**
   * The connection (or an attempt) is gone: requests in flight fail with `error` (they are
   * not sent again, the server may have handled them); queued ones keep waiting if a
   * reconnect follows, and fail with `error` otherwise.
   * @param {WebWireError} error
   * @param {{reconnect: boolean, announce: boolean}} how whether a reconnect may follow,
   *   and whether to dispatch `disconnect`
   */
  #lost(error, { reconnect, announce }) {
    clearTimeout(this.#heartbeatTimer);
    for (const job of [...this.#pending.values()]) job.reject(error);
    // Their replies could only have come on that connection.
    this.#late.clear();
    const reconnecting = reconnect && this.#reconnect && this.#state !== 'closed';
    if (reconnecting) {
      this.#scheduleReconnect();
    } else {
      if (this.#state !== 'closed') this.#state = 'idle';
      this.#failQueue(error);
    }
    if (announce) this.dispatchEvent(new CustomEvent('disconnect', { detail: { error, reconnecting } }));
  }

  /** Schedules the next attempt, with exponential backoff and jitter. */
  #scheduleReconnect() {
    this.#state = 'reconnecting';
    const ceiling = Math.min(this.#maxDelay, this.#minDelay * 2 ** Math.min(this.#attempt, 30));
    this.#attempt++;
    // Half fixed, half random: clients of a restarted server do not all come back at once.
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    clearTimeout(this.#retryTimer);
    // Not keeping a Node process alive by itself: a script that forgets close() exits.
    this.#retryTimer = startTimer(
      () => {
        this.#retryTimer = undefined;
        if (this.#state === 'reconnecting') this.connect().catch(() => {});
      },
      delay,
      true,
    );
  }

  /** @param {WebWireError} error */
  #failQueue(error) {
    for (const job of [...this.#queue]) job.reject(error);
  }

  /** @param {Session} session @param {boolean} restored */
  #setSession(session, restored) {
    this.#session = session;
    this.#sessionEpoch++;
    try {
      this.#storage?.setItem(this.#storageKey, JSON.stringify({ session: session.key }));
    } catch {
      // Storage full or denied: the session still works for this page.
    }
    this.dispatchEvent(new CustomEvent('sessioncreated', { detail: { session, restored } }));
  }

  /** @param {'server' | 'closed' | 'restore-failed'} reason */
  #clearSession(reason) {
    const had = this.#session !== null || this.#storedKey() !== null;
    this.#session = null;
    try {
      this.#storage?.removeItem(this.#storageKey);
    } catch {
      // Nothing to do: the key stays in storage, and fails to restore next time.
    }
    if (had) this.dispatchEvent(new CustomEvent('sessionclosed', { detail: { reason } }));
  }

  /** @returns {string | null} */
  #storedKey() {
    try {
      const stored = this.#storage?.getItem(this.#storageKey);
      if (!stored) return null;
      const key = JSON.parse(stored).session;
      return typeof key === 'string' && key !== '' ? key : null;
    } catch {
      return null;
    }
  }
}

/**
 * @typedef {object} Queued
 * @property {Uint8Array} frame
 * @property {boolean} isRequest
 * @property {number} id
 * @property {boolean} settled
 * @property {(value: any) => void} resolve
 * @property {(error: Error) => void} reject
 * @property {(() => Error | null) | undefined} beforeSend
 * @property {((payload: Payload) => void) | undefined} late
 * @property {number} epoch the session epoch when it was sent (session requests)
 * @property {() => void} cleanup
 * @typedef {Queued} Pending
 */

/** @param {unknown} data */
function frameOf(data) {
  if (typeof data === 'string') throw new ProtocolError('text message: WebWire messages are binary');
  if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) return toBytes(/** @type {ArrayBuffer} */ (data));
  // The ws package may hand over fragments as an array of Buffers.
  if (Array.isArray(data)) return concat([], ...data.map((part) => toBytes(part)));
  throw new ProtocolError('unexpected message data');
}

/** Whether `a` and `b` are both null or hold the same bytes. @param {Uint8Array | null} a @param {Uint8Array | null} b */
function sameBytes(a, b) {
  if (a === null || b === null) return a === b;
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

/** @param {unknown} error */
function asWebWireError(error) {
  return error instanceof WebWireError ? error : new ProtocolError(String(error));
}

/**
 * Closes `socket`, with `code` where the WebSocket allows it: browsers accept only 1000
 * and 3000-4999 from scripts, so a protocol error (1002) falls back to 1000 there.
 * @param {WebSocket} socket @param {number} code
 */
function closeQuietly(socket, code) {
  socket.onmessage = null;
  try {
    socket.close(code);
  } catch {
    try {
      socket.close(1000);
    } catch {
      // Already closing: nothing left to do.
    }
  }
}

/** @param {string} url */
function resolveUrl(url) {
  const base = globalThis.location?.href;
  const parsed = base ? new URL(url, base) : new URL(url);
  if (parsed.protocol === 'http:') parsed.protocol = 'ws:';
  else if (parsed.protocol === 'https:') parsed.protocol = 'wss:';
  if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') throw new TypeError(`not a WebSocket URL: ${url}`);
  return parsed.href;
}

/**
 * `url` as error messages may show it: its userinfo, query and fragment replaced by
 * `<redacted>` (pages pass tokens in the query: `wss://host/ws?token=…`).
 * @param {string} url an absolute URL (resolved by `resolveUrl`)
 */
function redactUrl(url) {
  const parsed = new URL(url);
  const user = parsed.username || parsed.password ? '<redacted>@' : '';
  // As the Rust client's `redact_url`: one mark for whatever follows the path.
  const rest = parsed.search ? '?<redacted>' : parsed.hash ? '#<redacted>' : '';
  return `${parsed.protocol}//${user}${parsed.host}${parsed.pathname}${rest}`;
}

/**
 * Creates a client and connects it: resolves once connected.
 * @param {string} url @param {ClientOptions} [options]
 * @returns {Promise<WebWireClient>}
 */
export async function connect(url, options = {}) {
  const client = new WebWireClient(url, options);
  try {
    await client.connect();
  } catch (error) {
    // The caller gets no client to close: it must not go on reconnecting in the background.
    client.close();
    throw error;
  }
  return client;
}
