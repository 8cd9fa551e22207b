// Finds the golden vectors: the repository's own copy, tests/data/protocol-vectors.json
// (which the Rust tests check against the shared spec's when that is checked out beside
// the repository). WEBWIRE_SHARED (a folder holding protocol-vectors.json) overrides it.

import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
/** The repository's root: js/test/support/../../.. */
export const repoRoot = resolve(here, '..', '..', '..');

/** The golden vectors; throws with the places looked at when the file is missing. */
export function loadVectors() {
  const candidates = [
    process.env.WEBWIRE_SHARED && join(process.env.WEBWIRE_SHARED, 'protocol-vectors.json'),
    join(repoRoot, 'tests', 'data', 'protocol-vectors.json'),
  ].filter(Boolean);
  const found = candidates.find((path) => existsSync(path));
  if (!found) {
    throw new Error(
      `protocol-vectors.json not found; looked at:\n  ${candidates.join('\n  ')}\n` +
        'the repository holds them in tests/data/; or set WEBWIRE_SHARED to a folder with them',
    );
  }
  const vectors = JSON.parse(readFileSync(found, 'utf8'));
  if (!Array.isArray(vectors) || vectors.length === 0) throw new Error(`${found}: no vectors`);
  return vectors;
}
