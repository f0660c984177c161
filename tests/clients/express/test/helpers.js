'use strict';
// Helpers for the end-to-end tests: a node-redis client, the app on an ephemeral loopback port,
// an HTTP agent with a tiny cookie jar, and a bounded poll.

const http = require('node:http');
const { createClient } = require('redis');
const { createApp, COOKIE_NAME } = require('../app');

function redisUrl() {
  const url = process.env.REDIS_URL;
  if (!url) throw new Error('REDIS_URL is not set (run the tests through run.sh)');
  const host = new URL(url).hostname;
  // Only loopback: the tests never send traffic anywhere else.
  if (!/^(127\.\d+\.\d+\.\d+|localhost|\[::1\])$/.test(host)) {
    throw new Error(`REDIS_URL must point to a loopback address, not ${host}`);
  }
  return url;
}

async function connectRedis(name) {
  const client = createClient({
    url: redisUrl(),
    name,
    // Fail instead of reconnecting for ever when the server goes away mid-test.
    socket: { connectTimeout: 5000, reconnectStrategy: false },
  });
  const errors = [];
  client.on('error', (err) => errors.push(err));
  await client.connect();
  client.errors = errors;
  return client;
}

// Starts the app with its own node-redis client on 127.0.0.1:0.
async function startApp(options = {}) {
  const client = await connectRedis(options.clientName ?? 'express-session-store');
  const { app, store } = createApp({ client, ...options });
  const server = await new Promise((resolve, reject) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });
  const { port } = server.address();
  return {
    base: `http://127.0.0.1:${port}`,
    store,
    client,
    options,
    async close() {
      server.closeAllConnections?.();
      await new Promise((resolve) => server.close(resolve));
      await client.quit();
    },
  };
}

// One HTTP request on loopback: { status, text, setCookies } (every Set-Cookie header, in order);
// fails when the connection is silent for 15 s.
function httpRequest(url, method, headers, payload) {
  return new Promise((resolve, reject) => {
    if (payload !== undefined) headers['content-length'] = Buffer.byteLength(payload);
    const req = http.request(url, { method, headers, timeout: 15000 }, (res) => {
      res.setEncoding('utf8');
      let text = '';
      res.on('data', (chunk) => { text += chunk; });
      res.on('end', () => resolve({
        status: res.statusCode, text, setCookies: res.headers['set-cookie'] ?? [],
      }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${url} got no answer for 15 s`)));
    req.on('error', reject);
    req.end(payload);
  });
}

// A cookie jar for one host: name -> { value, expires (ms or null) }. Expired cookies are not
// sent, as a browser would; `raw` keeps every Set-Cookie seen by the last request.
class Agent {
  constructor(base) {
    this.base = base;
    this.jar = new Map();
    this.lastSetCookies = [];
  }

  cookieHeader() {
    const now = Date.now();
    const parts = [];
    for (const [name, c] of this.jar) {
      if (c.expires !== null && c.expires <= now) continue;
      parts.push(`${name}=${c.value}`);
    }
    return parts.join('; ');
  }

  storeSetCookie(header) {
    const [pair, ...attrs] = header.split(';').map((s) => s.trim());
    const eq = pair.indexOf('=');
    const name = pair.slice(0, eq);
    const value = pair.slice(eq + 1);
    let expires = null;
    for (const attr of attrs) {
      const [k, v] = attr.split('=');
      if (k.toLowerCase() === 'expires') expires = Date.parse(v);
      if (k.toLowerCase() === 'max-age') expires = Date.now() + Number(v) * 1000;
    }
    if (expires !== null && expires <= Date.now()) {
      this.jar.delete(name);
    } else {
      this.jar.set(name, { value, expires });
    }
  }

  async request(method, path, body) {
    const headers = { accept: 'application/json' };
    const cookie = this.cookieHeader();
    if (cookie) headers.cookie = cookie;
    let payload;
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
      payload = JSON.stringify(body);
    }
    const url = new URL(/^https?:/.test(path) ? path : this.base + path);
    // node:http, not fetch: Debian 12's Node 18 takes fetch from its node-undici 5.15, whose
    // Headers has no getSetCookie(), and a joined Set-Cookie header cannot be split safely.
    const res = await httpRequest(url, method, headers, payload);
    this.lastSetCookies = res.setCookies;
    for (const h of this.lastSetCookies) this.storeSetCookie(h);
    const { text } = res;
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: res.status, json, text, setCookies: this.lastSetCookies };
  }

  get(path) { return this.request('GET', path); }
  post(path, body = {}) { return this.request('POST', path, body); }

  // The session id inside the signed cookie (`s:<id>.<signature>`), or null.
  sessionId() {
    const c = this.jar.get(COOKIE_NAME);
    if (!c) return null;
    const decoded = decodeURIComponent(c.value);
    if (!decoded.startsWith('s:')) throw new Error(`unsigned session cookie ${decoded}`);
    return decoded.slice(2, decoded.lastIndexOf('.'));
  }

  sessionCookie() {
    return this.jar.get(COOKIE_NAME) ?? null;
  }
}

// Polls `check` (async, returns truthy when done) every `intervalMs` until `timeoutMs`.
async function waitFor(what, check, { timeoutMs = 10000, intervalMs = 50 } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

// connect-redis's store methods take callbacks.
function call(store, method, ...args) {
  return new Promise((resolve, reject) => {
    store[method](...args, (err, value) => (err ? reject(err) : resolve(value)));
  });
}

module.exports = { Agent, COOKIE_NAME, call, connectRedis, redisUrl, startApp, waitFor };
