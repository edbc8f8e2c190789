// Secrets shown once: an operator token, an agent credential, a kitting
// CSV. The server keeps only their hashes, so this is the one moment they
// exist outside the hands they are meant for; the page says so and makes
// copying (or downloading) easy.
import { h, button } from './dom.js';

// issuedToken shows one token with a Copy button. key marks the card
// (data-issued) for tests and for the page to find it again.
export function issuedToken(token, key, text) {
  const out = h('input', { class: 'token mono', readonly: true, value: token, 'aria-label': `Token for ${key}`, spellcheck: 'false' });
  out.addEventListener('focus', () => out.select());
  const copy = button('Copy', async () => {
    out.select();
    try {
      await navigator.clipboard.writeText(token);
      copy.textContent = 'Copied';
    } catch {
      copy.textContent = 'Select and copy';
    }
  }, { class: 'btn small' });
  return h('div', { class: 'card notice ok', role: 'status', 'data-issued': key },
    h('p', {}, text, ' ', h('strong', {}, 'Copy the token now: it is shown only this once.')),
    h('div', { class: 'row' }, out, copy));
}

// download offers text as a file: the link a kitting script's CSV is
// saved from (a Blob URL, so the tokens never travel again).
export function download(text, filename, label, type = 'text/csv') {
  const url = URL.createObjectURL(new Blob([text], { type }));
  return h('a', { class: 'btn primary', href: url, download: filename }, label);
}
