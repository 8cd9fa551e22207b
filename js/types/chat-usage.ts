// How a page uses the chat room's contract (chat.ts, generated from the server's Rust
// types): `npm run typecheck` checks this file with `tsc --strict`, so a change on either
// side that breaks the other fails CI. The `@ts-expect-error` lines are calls the contract
// must refuse: each fails the check if it type-checks.
import { WebWireClient } from '../webwire.js';
import type { ChatMessage, Contract } from './chat';

export async function chat(url: string): Promise<string> {
  const client = new WebWireClient<Contract>(url);
  const welcome = await client.call('login', { user: 'alice', password: 'wonderland' });
  const note: string | null = await client.call('say', { text: `hello from ${welcome.user}` });
  await client.call('logout', {});

  // @ts-expect-error a login needs a password
  await client.call('login', { user: 'alice' });
  // @ts-expect-error no request of that name
  await client.call('shout', { text: 'hi' });
  // @ts-expect-error the reply has no such field
  console.log(welcome.name);
  // @ts-expect-error a message is not said with a number
  await client.call('say', { text: 42 });

  await client.emit('message', { from: 'alice', text: 'typed' });
  client.on('signal', ({ detail }) => {
    if (detail.name === 'message') {
      const message: ChatMessage = detail.payload.json();
      console.log(`${message.from}: ${message.text}`, note);
    }
  });
  return welcome.user;
}
