// The topics extension in the client against the Rust server of examples/peer: a
// subscription's publications in order, a dropped connection that resumes with exactly
// what it missed (then a 'topic-recovered' event, then live ones), a refusal, and a
// client without the extension.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { ReplyError } from '../webwire.js';
import { nextEvent, peerSuite, within } from './support/helpers.js';

/** Collects a client's publications and recovery events, in the order they came. */
function record(client) {
  const seen = [];
  let wake = () => {};
  const push = (item) => {
    seen.push(item);
    wake();
  };
  client.on('publication', (e) => push({ text: e.detail.payload.text(), offset: e.detail.position?.offset ?? null }));
  client.on('topic-recovered', (e) => push({ recovered: e.detail.recovered, offset: e.detail.position.offset }));
  /** Waits until `predicate(seen)` holds (bounded). */
  const until = (predicate, what) =>
    within(
      new Promise((resolve) => {
        const check = () => (predicate(seen) ? resolve(seen) : (wake = check));
        check();
      }),
      what,
    );
  return { seen, until };
}

describe('the topics extension against examples/peer', () => {
  const { open } = peerSuite();

  test('a dropped subscriber resumes with exactly what it missed, then live ones', async () => {
    const subscriber = await open({ topics: true });
    const publisher = await open();
    const { seen, until } = record(subscriber);
    const answer = await subscriber.subscribe('room/js');
    assert.equal(answer.status, 'subscribed');
    for (const text of ['m1', 'm2', 'm3']) await publisher.request('publish', `room/js|${text}`);
    await until((s) => s.length === 3, 'three publications');

    const lost = nextEvent(subscriber, 'disconnect');
    await subscriber.request('drop-me');
    await lost;
    for (const text of ['m4', 'm5', 'm6', 'm7', 'm8']) await publisher.request('publish', `room/js|${text}`);
    await until((s) => s.some((item) => 'recovered' in item), 'the recovery');
    await publisher.request('publish', 'room/js|m9');
    await until((s) => s.filter((item) => 'text' in item).length === 9, 'nine publications');

    const texts = seen.filter((item) => 'text' in item);
    assert.deepEqual(texts.map((item) => item.text), ['m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7', 'm8', 'm9'], 'each once, in order');
    assert.deepEqual(texts.map((item) => item.offset), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    const recovery = seen.findIndex((item) => 'recovered' in item);
    const { recovered, offset: answered } = seen[recovery];
    assert.equal(recovered, true);
    // The reconnection may come before all of m4..m8 were published: what it recovered
    // (offsets up to its answer) came before the event; live ones (after the answer's
    // offset) may come before or after it (docs/topics.md §3.2).
    assert.ok(answered >= 3 && answered <= 8, `answered ${answered}`);
    assert.ok(seen.slice(recovery + 1).every((item) => item.offset > answered), JSON.stringify(seen));
  });

  test('a refused subscription rejects with WW_REFUSED; no extension, no subscribe', async () => {
    const client = await open({ topics: true });
    const error = await client.subscribe('secret').then(
      () => assert.fail('subscribed'),
      (e) => e,
    );
    assert.ok(error instanceof ReplyError);
    assert.equal(error.code, 'WW_REFUSED');
    assert.equal(client.topics.size, 0);
    const plain = await open();
    await assert.rejects(plain.subscribe('room/x'), TypeError);
  });
});
