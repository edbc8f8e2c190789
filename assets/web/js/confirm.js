// confirmButton asks for a second click instead of window.confirm(), which
// blocks the page, cannot be styled and is awkward with a keyboard.
import { h } from './dom.js';

export function confirmButton(text, question, action, { danger = true } = {}) {
  let armed = false;
  let timer;
  const btn = h('button', { type: 'button', class: `btn small${danger ? ' danger' : ''}` }, text);
  const disarm = () => {
    armed = false;
    btn.textContent = text;
  };
  btn.addEventListener('click', async () => {
    if (!armed) {
      armed = true;
      btn.textContent = 'Confirm: ' + question;
      timer = setTimeout(disarm, 5000);
      return;
    }
    clearTimeout(timer);
    disarm();
    btn.disabled = true;
    try {
      await action();
    } finally {
      btn.disabled = false;
    }
  });
  btn.addEventListener('blur', () => armed && (clearTimeout(timer), disarm()));
  return btn;
}
