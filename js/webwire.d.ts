// Types of webwire.js, the WebWire protocol v2.0 client (hand-written; the module itself
// carries the same information as JSDoc).

export type Encoding = 'binary' | 'utf8' | 'utf16';

export type ErrorKind =
  | 'reply'
  | 'internal'
  | 'shutdown'
  | 'session_not_found'
  | 'max_session_connections'
  | 'sessions_disabled'
  | 'limit'
  | 'timeout'
  | 'disconnected'
  | 'aborted'
  | 'protocol'
  | 'invalid'
  | 'session_active';

export declare const MessageType: Readonly<{
  ReplyError: 0x00;
  ReplyShutdown: 0x01;
  ReplyInternalError: 0x02;
  ReplySessionNotFound: 0x03;
  ReplyMaxSessConnsReached: 0x04;
  ReplySessionsDisabled: 0x05;
  NotifySessionCreated: 0x15;
  NotifySessionClosed: 0x16;
  AcceptConf: 0x17;
  RequestCloseSession: 0x1f;
  RequestRestoreSession: 0x20;
  Heartbeat: 0x21;
  SignalBinary: 0x3f;
  SignalUtf8: 0x40;
  SignalUtf16: 0x41;
  RequestBinary: 0x7f;
  RequestUtf8: 0x80;
  RequestUtf16: 0x81;
  ReplyBinary: 0xbf;
  ReplyUtf8: 0xc0;
  ReplyUtf16: 0xc1;
}>;

/** Every error of the module; branch on `kind` or on the subclass. */
export declare class WebWireError extends Error {
  constructor(kind: string, message: string, options?: { cause?: unknown });
  /** One of `ErrorKind` (editors still suggest them); other strings for kinds of your own. */
  readonly kind: ErrorKind | (string & {});
}
/** An error reply of the server's handler. */
export declare class ReplyError extends WebWireError {
  constructor(code: string, message: string);
  readonly kind: 'reply';
  /** The error code (printable ASCII). */
  readonly code: string;
  /** The server's message, possibly empty (`message` is `code: serverMessage`). */
  readonly serverMessage: string;
}
export declare class InternalError extends WebWireError {
  readonly kind: 'internal';
}
export declare class ShutdownError extends WebWireError {
  readonly kind: 'shutdown';
}
export declare class SessionNotFoundError extends WebWireError {
  readonly kind: 'session_not_found';
}
export declare class MaxSessionConnectionsError extends WebWireError {
  readonly kind: 'max_session_connections';
}
export declare class SessionsDisabledError extends WebWireError {
  readonly kind: 'sessions_disabled';
}
/** A message larger than the server accepts; it was not sent. */
export declare class LimitError extends WebWireError {
  constructor(size: number, limit: number);
  readonly kind: 'limit';
  readonly size: number;
  readonly limit: number;
}
export declare class TimeoutError extends WebWireError {
  constructor(ms: number);
  readonly kind: 'timeout';
}
export declare class DisconnectedError extends WebWireError {
  constructor(message?: string, options?: { cause?: unknown });
  readonly kind: 'disconnected';
}
/** Aborted by the caller's AbortSignal; `cause` is the signal's reason. */
export declare class AbortError extends WebWireError {
  constructor(reason?: unknown);
  readonly kind: 'aborted';
}
/** The peer broke the protocol (also what `parse` throws). */
export declare class ProtocolError extends WebWireError {
  constructor(message: string);
  readonly kind: 'protocol';
}
/** A message a writer must not produce (bad name, nothing to send, ...). */
export declare class CodecError extends WebWireError {
  constructor(message: string);
  readonly kind: 'invalid';
}

/** Bytes and their encoding. */
export declare class Payload {
  constructor(encoding: Encoding, data: Uint8Array);
  readonly encoding: Encoding;
  /** As on the wire (UTF-16: little-endian code units). */
  readonly data: Uint8Array;
  readonly length: number;
  static utf8(text: string): Payload;
  static utf16(text: string): Payload;
  static binary(bytes: Uint8Array | ArrayBuffer | ArrayBufferView): Payload;
  /** UTF-16 decoded as UTF-16, anything else as UTF-8. */
  text(): string;
  json(): any;
}

/**
 * A payload argument: a string (UTF-8 unless `encoding: 'utf16'`), bytes (binary), a
 * `Payload`, nothing (empty), or any other value as JSON text.
 */
export type PayloadInput = string | Uint8Array | ArrayBuffer | ArrayBufferView | Payload | null | undefined | object | number | boolean;

export declare function toPayload(value: PayloadInput, encoding?: Encoding): Payload;

/** A parsed (or to-be-written) message; fields depend on `kind`. */
export interface Message {
  kind: keyof typeof MessageType;
  id?: Uint8Array;
  name?: string;
  payload?: Payload;
  code?: string;
  message?: string;
  session?: string;
  key?: Uint8Array | string;
  major?: number;
  minor?: number;
  readTimeout?: number;
  messageBufferSize?: number;
  subProtocol?: Uint8Array | null;
}

export declare function parse(frame: Uint8Array | ArrayBuffer): Message;
export declare function encode(message: Message): Uint8Array;
export declare function idBytes(n: number): Uint8Array;

export interface Session {
  key: string;
  created: Date;
  lastLookup: Date;
  info: Record<string, unknown>;
}
export declare function parseSession(json: string): Session;

export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export interface ClientOptions {
  /** The WebSocket constructor; default the global one (Node 20: pass the `ws` package's). */
  WebSocket?: unknown;
  /**
   * Connect at once and whenever something is sent while idle (default true). With false
   * only `connect()` connects, and a failed `connect()` is not retried.
   */
  autoconnect?: boolean;
  /**
   * Reconnect after a loss with exponential backoff (default true; 250 ms to 10 s). Delays
   * are numbers >= 0 (else a TypeError), raised to at least 10 ms.
   */
  reconnect?: boolean | { minDelay?: number; maxDelay?: number };
  /** Default request timeout in ms (60 000); a number >= 0 or Infinity (else a TypeError). */
  requestTimeout?: number;
  /** Time for one connection attempt, handshake included, in ms (10 000); Infinity: no limit. */
  connectTimeout?: number;
  /** The sub-protocol name the server must advertise (default none). */
  subProtocol?: string | null;
  /** Keep the session key across page loads: true for localStorage, or a Storage-like object. */
  persistSession?: boolean | StorageLike;
  /** Storage key (default `webwire-session:` + URL). */
  storageKey?: string;
  /**
   * Speak the topics extension (docs/topics.md): offer the sub-protocol `webwire.topics.1`
   * (a server that does not select it fails the handshake) and allow `subscribe`.
   */
  topics?: boolean;
}

/** A position in a topic: the epoch as 16 hex digits of its wire bytes, the offset. */
export interface Position {
  epoch: string;
  offset: number;
}

export type SubscribeStatus = 'subscribed' | 'recovered' | 'not_recovered' | 'no_history';

/** The WebSocket sub-protocol of the topics extension. */
export declare const TOPICS_SUBPROTOCOL: 'webwire.topics.1';
export declare function encodeSubscribe(topic: string, resume?: Position | null): Uint8Array;
export declare function parseSubscribe(payload: Uint8Array): { topic: string; resume: Position | null };
export declare function parseSubscribed(payload: Uint8Array): { status: SubscribeStatus; position: Position };
export declare function parsePublication(payload: Uint8Array): { topic: string; position: Position | null; signal: Message };

export interface RequestOptions {
  /** ms (>= 0, or Infinity: none; else the call rejects with a TypeError); default the client's `requestTimeout`. */
  timeout?: number;
  signal?: AbortSignal;
  /** For string payloads: 'utf8' (default) or 'utf16'; for bytes: 'binary' (default). */
  encoding?: Encoding;
}

export interface WebWireEventMap {
  /** Connected (the session restored, if there was one); no detail (`null`). */
  connect: CustomEvent<null>;
  disconnect: CustomEvent<{ error: WebWireError; reconnecting: boolean }>;
  signal: CustomEvent<{ name: string; payload: Payload }>;
  sessioncreated: CustomEvent<{ session: Session; restored: boolean }>;
  sessionclosed: CustomEvent<{ reason: 'server' | 'closed' | 'restore-failed' }>;
  /** A publication of a subscribed topic, once, in order (position null without history). */
  publication: CustomEvent<{ topic: string; position: Position | null; name: string; payload: Payload }>;
  /** After a reconnection, per topic: recovered means every missed publication came before. */
  'topic-recovered': CustomEvent<{ topic: string; recovered: boolean; status: SubscribeStatus; position: Position }>;
  /** The server refused a subscription again after a reconnection. */
  'topic-ended': CustomEvent<{ topic: string; error: WebWireError }>;
}

/**
 * A contract: requests by name (what each sends and is answered with) and signals by
 * name. Generate it from the server's Rust types (`contract::TypeScript`, feature `ts`).
 */
export type ContractShape = {
  requests: { [name: string]: { request: unknown; reply: unknown } };
  signals: { [name: string]: unknown };
};

/** No contract: any name, any value. */
export type AnyContract = {
  requests: { [name: string]: { request: any; reply: any } };
  signals: { [name: string]: any };
};

export declare class WebWireClient<C extends ContractShape = AnyContract> extends EventTarget {
  constructor(url: string, options?: ClientOptions);
  readonly url: string;
  readonly state: 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'closed';
  readonly connected: boolean;
  readonly session: Session | null;
  /** The server's message size limit (Infinity before the first handshake). */
  readonly messageSizeLimit: number;
  /** 75 % of the server's read timeout, in ms (0 before the first handshake). */
  readonly heartbeatPeriod: number;
  on<K extends keyof WebWireEventMap>(type: K, listener: (event: WebWireEventMap[K]) => void): () => void;
  off<K extends keyof WebWireEventMap>(type: K, listener: (event: WebWireEventMap[K]) => void): void;
  connect(): Promise<void>;
  request(name: string, payload?: PayloadInput, options?: RequestOptions): Promise<Payload>;
  signal(name: string, payload?: PayloadInput, options?: RequestOptions): Promise<void>;
  /** A contract request: `value` sent as UTF-8 JSON, the reply read as JSON. */
  call<K extends keyof C['requests'] & string>(
    name: K,
    value: C['requests'][K]['request'],
    options?: Omit<RequestOptions, 'encoding'>,
  ): Promise<C['requests'][K]['reply']>;
  /** A contract signal: `value` sent as UTF-8 JSON. */
  emit<K extends keyof C['signals'] & string>(
    name: K,
    value: C['signals'][K],
    options?: Omit<RequestOptions, 'encoding'>,
  ): Promise<void>;
  /**
   * Rejects with kind 'session_active' if a session is active when called or when sent.
   * Timed out or aborted after it was sent, its late success still restores the session
   * (`sessioncreated`), unless the session changed since.
   */
  restoreSession(key: string, options?: Omit<RequestOptions, 'encoding'>): Promise<Session>;
  /**
   * Logs out (offline: only forgets the session). Timed out or aborted after it was sent,
   * its late confirmation still ends the session (`sessionclosed`), unless it changed since.
   */
  closeSession(options?: Omit<RequestOptions, 'encoding'>): Promise<void>;
  /** Needs `{topics: true}` (else a TypeError); rejects with a ReplyError `WW_REFUSED`, ... */
  subscribe(topic: string, options?: Omit<RequestOptions, 'encoding'>): Promise<{ status: SubscribeStatus; position: Position }>;
  unsubscribe(topic: string, options?: Omit<RequestOptions, 'encoding'>): Promise<void>;
  /** The subscribed topics and the last position seen in each. */
  readonly topics: Map<string, Position | null>;
  close(): void;
}

/** A new client, connected; if the first attempt fails, the client is closed and the error rethrown. */
export declare function connect<C extends ContractShape = AnyContract>(url: string, options?: ClientOptions): Promise<WebWireClient<C>>;
