// What a browser git client (gitworkshop-style) does against a GRASP server, from a page
// served by another origin: clone over CORS with isomorphic-git, publish a state event and
// watch it arrive over the relay websocket, push, and read a refused push's reason.
// Parameters come in the query string; the outcome is left in `window.__result`.

import { Buffer } from 'buffer';
import LightningFS from '@isomorphic-git/lightning-fs';
import git from 'isomorphic-git';
import http from 'isomorphic-git/http/web';
import { finalizeEvent, getPublicKey } from 'nostr-tools/pure';
import { Relay } from 'nostr-tools/relay';
import { hexToBytes } from 'nostr-tools/utils';

globalThis.Buffer = Buffer; // isomorphic-git expects Node's Buffer

const params = new URLSearchParams(location.search);
const server = params.get('server'); // http://127.0.0.1:<port>
const repoUrl = `${server}/${params.get('npub')}/${params.get('d')}.git`;
const relayUrl = server.replace(/^http/, 'ws');
const secret = hexToBytes(params.get('sk'));
const author = { name: 'Browser', email: 'browser@example.invalid' };
const result = { steps: [] };

function step(name, detail = {}) {
  result.steps.push(name);
  Object.assign(result, { [name]: detail });
  document.getElementById('log').textContent += `${name}: ${JSON.stringify(detail)}\n`;
}

function within(ms, promise, what) {
  return Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms)),
  ]);
}

async function commitFile(fs, dir, path, text, message) {
  await fs.promises.writeFile(`${dir}/${path}`, text);
  await git.add({ fs, dir, filepath: path });
  return git.commit({ fs, dir, message, author });
}

async function main() {
  const fs = new LightningFS('grasp-browser-test', { wipe: true });
  const dir = '/repo';

  await git.clone({ fs, http, dir, url: repoUrl, ref: 'main', singleBranch: true });
  const readme = new TextDecoder().decode(await fs.promises.readFile(`${dir}/README`));
  step('clone', { head: await git.resolveRef({ fs, dir, ref: 'HEAD' }), readme });

  const relay = await Relay.connect(relayUrl);
  const oid = await commitFile(fs, dir, 'browser.txt', 'written in a browser\n', 'from the browser');
  const identifier = params.get('d');
  // The state arrives live once the push below releases it from purgatory.
  let subscription;
  const delivered = new Promise((resolve) => {
    subscription = relay.subscribe([{ kinds: [30618], authors: [getPublicKey(secret)], '#d': [identifier] }], {
      onevent(event) {
        if (event.tags.some(([name, value]) => name === 'refs/heads/main' && value === oid)) resolve(event);
      },
    });
  });
  const createdAt = Math.max(Math.floor(Date.now() / 1000), Number(params.get('after')) + 1);
  const state = finalizeEvent(
    {
      kind: 30618,
      created_at: createdAt,
      content: '',
      tags: [['d', identifier], ['refs/heads/main', oid], ['HEAD', 'ref: refs/heads/main']],
    },
    secret,
  );
  const okMessage = await relay.publish(state);
  step('publish', { id: state.id, message: okMessage });

  const pushed = await git.push({ fs, http, dir, url: repoUrl, ref: 'main' });
  step('push', { ok: pushed.ok, ref: pushed.refs['refs/heads/main'], oid });
  const live = await within(20000, delivered, 'the state event over the websocket');
  step('live', { id: live.id });

  await commitFile(fs, dir, 'unsigned.txt', 'no state event for this\n', 'not authorized');
  try {
    await git.push({ fs, http, dir, url: repoUrl, ref: 'main' });
    step('rejected', { pushed: true });
  } catch (e) {
    step('rejected', { pushed: false, code: e.code, message: e.message });
  }
  // nostr-tools sends CLOSE from a promise callback; let it go out (microtasks run before
  // the next task) before the socket closes, or the browser logs a send on a closed socket.
  subscription.close();
  await new Promise((resolve) => setTimeout(resolve, 0));
  relay.close();
}

main()
  .catch((e) => {
    result.error = `${e.name}: ${e.message}`;
  })
  .finally(() => {
    window.__result = result;
    window.__done = true;
  });
