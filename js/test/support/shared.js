// Finds the `shared` folder beside the repository (shared/protocol-vectors.json): in CI the
// repository is cloned next to it. WEBWIRE_SHARED overrides the place.

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
    join(repoRoot, '..', 'shared', 'protocol-vectors.json'),
    join(repoRoot, 'shared', 'protocol-vectors.json'),
  ].filter(Boolean);
  const found = candidates.find((path) => existsSync(path));
  if (!found) {
    throw new Error(
      `protocol-vectors.json not found; looked at:\n  ${candidates.join('\n  ')}\n` +
        'clone the repository next to the `shared` folder, or set WEBWIRE_SHARED to it',
    );
  }
  const vectors = JSON.parse(readFileSync(found, 'utf8'));
  if (!Array.isArray(vectors) || vectors.length === 0) throw new Error(`${found}: no vectors`);
  return vectors;
}
