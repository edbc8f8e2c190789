// fetch wrapper for /api: adds the token, turns {"error": …} bodies into
// ApiError, and sends the browser to Login on any 401.
import { token, clearToken } from './auth.js';

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

let onUnauthorized = () => {};
let onForbidden = () => {};

// setUnauthorizedHandler is called once by main.js (avoids an import cycle
// with the router).
export function setUnauthorizedHandler(f) {
  onUnauthorized = f;
}

// setForbiddenHandler is told about every 403: the caller's role may have
// changed since the page loaded.
export function setForbiddenHandler(f) {
  onForbidden = f;
}

// request sends one API call. body: undefined, FormData, a string (sent with
// opts.type as Content-Type) or a value sent as JSON. opts.okStatus lists
// extra statuses whose body is data, not an error (fleet health's 503).
export async function request(method, path, body, opts = {}) {
  const headers = { 'X-Kanade-Source': 'dashboard', Accept: 'application/json, text/plain' };
  const t = token();
  if (t) headers.Authorization = 'Bearer ' + t;
  let payload;
  if (body instanceof FormData) {
    payload = body;
  } else if (typeof body === 'string') {
    payload = body;
    headers['Content-Type'] = opts.type || 'text/plain';
  } else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers['Content-Type'] = 'application/json';
  }
  let r;
  try {
    r = await fetch(path, { method, headers, body: payload, signal: opts.signal });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'cannot reach the backend: ' + e.message);
  }
  if (r.status === 401) {
    clearToken();
    const msg = await errorText(r);
    onUnauthorized(msg);
    throw new ApiError(401, msg);
  }
  if (r.status === 403) onForbidden();
  const data = await decode(r);
  if (!r.ok && !(opts.okStatus || []).includes(r.status)) {
    const msg = data && typeof data === 'object' && data.error ? data.error
      : (typeof data === 'string' && data.trim()) || `${r.status} ${r.statusText}`;
    throw new ApiError(r.status, msg, data);
  }
  const total = r.headers.get('X-Total-Count');
  return opts.withMeta ? { data, status: r.status, total: total === null ? null : Number(total) } : data;
}

async function decode(r) {
  if (r.status === 204) return null;
  const ct = r.headers.get('Content-Type') || '';
  const text = await r.text();
  if (ct.includes('json') && text !== '') {
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
  return text;
}

async function errorText(r) {
  const d = await decode(r);
  return (d && d.error) || 'unauthorized';
}

export const get = (path, opts) => request('GET', path, undefined, opts);
export const post = (path, body, opts) => request('POST', path, body, opts);
export const put = (path, body, opts) => request('PUT', path, body, opts);
export const del = (path, opts) => request('DELETE', path, undefined, opts);
export const patch = (path, body, opts) => request('PATCH', path, body, opts);

// list fetches one page of a list route: {items, total}. total falls back to
// the page length when the route sends no X-Total-Count.
export async function list(path, params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, v);
  }
  const qs = q.toString();
  const { data, total } = await request('GET', qs ? `${path}?${qs}` : path, undefined, { withMeta: true });
  const items = Array.isArray(data) ? data : [];
  return { items, total: total ?? items.length };
}

// seg encodes one path segment (pc ids and job ids are user data).
export const seg = encodeURIComponent;
