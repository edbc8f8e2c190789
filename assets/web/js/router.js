// Client-side routing with real paths (the backend serves index.html for
// every non-API path, so a reload or a shared link lands on the same page).
// Each page is a module under pages/, loaded on first visit.
import { h, errorCard } from './dom.js';
import { signedIn } from './auth.js';
import * as live from './live.js';

// [pattern, module, export]; the first match wins.
const ROUTES = [
  ['/', 'dashboard'],
  ['/login', 'login'],
  ['/agents', 'agents'],
  ['/agents/:id', 'agent'],
  ['/inventory', 'inventory'],
  ['/inventory/job/:job', 'inventory', 'byJob'],
  ['/inventory/pc/:pc', 'inventory', 'byPc'],
  ['/jobs', 'jobs'],
  ['/jobs/new', 'job-edit'],
  ['/jobs/:id', 'job-edit'],
  ['/exec', 'exec'],
  ['/executions', 'executions'],
  ['/executions/:id', 'execution'],
  ['/schedules', 'schedules'],
  ['/schedules/new', 'schedule-edit'],
  ['/schedules/:id', 'schedule'],
  ['/schedules/:id/edit', 'schedule-edit'],
  ['/results', 'results'],
  ['/results/:rid', 'results', 'byRequest'],
  ['/audit', 'audit'],
  ['/run', 'run'],
  ['/logs', 'logs'],
  ['/config', 'config'],
  ['/rollout', 'rollout'],
  ['/jetstream', 'jetstream'],
  ['/operators', 'operators'],
  ['/kitting', 'credentials'],
].map(([pattern, module, exp]) => ({ parts: pattern.split('/').filter(Boolean), module, exp: exp || 'default' }));

function match(path) {
  const segs = path.split('/').filter(Boolean).map((s) => {
    try {
      return decodeURIComponent(s);
    } catch {
      return s;
    }
  });
  for (const r of ROUTES) {
    if (r.parts.length !== segs.length) continue;
    const params = {};
    if (r.parts.every((p, i) => (p.startsWith(':') ? ((params[p.slice(1)] = segs[i]), true) : p === segs[i]))) {
      return { route: r, params };
    }
  }
  return null;
}

let current = null;
let main;

export function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  // Before start() (a 401 while main.js asks who is signed in) only the
  // address changes; start() draws it.
  if (main) render(true);
}

// Page context: what a page module receives. Everything it registers with
// live() or onCleanup() ends when the user leaves the page.
function context(params, query) {
  const cleanups = [];
  const ac = new AbortController();
  const ctx = {
    root: main,
    params,
    query,
    signal: ac.signal,
    navigate,
    get alive() {
      return !ac.signal.aborted;
    },
    title(t) {
      document.title = t ? `${t} · kanade` : 'kanade';
    },
    onCleanup(f) {
      cleanups.push(f);
    },
    // live re-runs refresh when events of the given kinds arrive (or on a
    // poll while the stream is down), at most once per `wait` ms and never
    // two at a time.
    live(kinds, refresh, wait = 500) {
      let timer = null;
      let running = false;
      let again = false;
      const run = async () => {
        if (running) {
          again = true;
          return;
        }
        running = true;
        try {
          await refresh();
        } catch (e) {
          if (e.name !== 'AbortError') console.error(e);
        } finally {
          running = false;
          if (again && ctx.alive) {
            again = false;
            schedule();
          }
        }
      };
      const schedule = () => {
        if (!timer && ctx.alive) timer = setTimeout(() => ((timer = null), run()), wait);
      };
      const unsub = live.subscribe(kinds, schedule);
      cleanups.push(() => (unsub(), clearTimeout(timer)));
    },
  };
  return { ctx, stop: () => (ac.abort(), cleanups.forEach((f) => f())) };
}

async function render(moveFocus) {
  if (current) current.stop();
  current = null;
  const path = location.pathname;
  const m = match(path);
  document.body.classList.toggle('signed-out', !signedIn());
  if (!signedIn() && (!m || m.route.module !== 'login')) {
    history.replaceState(null, '', '/login?next=' + encodeURIComponent(path + location.search));
    return render(moveFocus);
  }
  markNav(path);
  // data-ready tells automation (the browser tests, screenshots) that the
  // page drew its first data; it is cleared while a page loads.
  main.removeAttribute('data-ready');
  document.body.classList.remove('nav-open');
  document.getElementById('nav-toggle').setAttribute('aria-expanded', 'false');
  const page = context(m ? m.params : {}, new URLSearchParams(location.search));
  current = page;
  if (!m) {
    page.ctx.title('Not found');
    main.replaceChildren(h('h1', {}, 'Page not found'), h('p', {}, 'No dashboard page at ', h('code', {}, path), '.'));
    main.dataset.ready = path;
    return;
  }
  let mod;
  try {
    mod = await import(`./pages/${m.route.module}.js`);
  } catch (e) {
    main.replaceChildren(errorCard(e, 'Could not load this page'));
    return;
  }
  if (current !== page) return;
  main.replaceChildren();
  try {
    await mod[m.route.exp](page.ctx);
  } catch (e) {
    if (current === page && e.name !== 'AbortError') main.append(errorCard(e));
  }
  if (current === page) main.dataset.ready = path;
  if (moveFocus && current === page) {
    // Screen-reader and keyboard users land on the new page's heading.
    main.focus({ preventScroll: true });
    window.scrollTo(0, 0);
  }
}

function markNav(path) {
  for (const a of document.querySelectorAll('#nav a')) {
    const href = a.getAttribute('href');
    const on = href === '/' ? path === '/' : path === href || path.startsWith(href + '/');
    if (on) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

// Same-origin links to dashboard pages are handled without a page load;
// links to /api or static files, new-tab clicks and downloads are left
// to the browser.
function onClick(e) {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const a = e.target.closest('a[href]');
  if (!a || a.target || a.hasAttribute('download')) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || /^\/(api|static)(\/|$)/.test(url.pathname)) return;
  e.preventDefault();
  if (url.pathname + url.search !== location.pathname + location.search) navigate(url.pathname + url.search);
}

export function start() {
  main = document.getElementById('main');
  document.addEventListener('click', onClick);
  window.addEventListener('popstate', () => render(true));
  render(false);
}

// rerender redraws the current page (after sign-in state changes).
export function rerender() {
  render(false);
}
