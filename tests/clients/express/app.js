'use strict';
// A small Express application that keeps its sessions with express-session in connect-redis,
// through node-redis. The tests run it against sessiond's RESP listener (or a real Redis).
//
//   GET  /visit   counts visits in the session (a first visit creates the session)
//   POST /login   {"user": NAME}: regenerates the session id, then records the user
//   GET  /me      reads the session; with `rolling` this read also extends its lifetime
//   POST /cart    {"item": ITEM}: appends an item to the session's cart
//   POST /touch   explicitly resets the session's expiry (store.touch -> EXPIRE)
//   POST /logout  destroys the session
//
// Run it by hand: REDIS_URL=redis://127.0.0.1:PORT node app.js [HTTP_PORT]

const express = require('express');
const session = require('express-session');
const RedisStore = require('connect-redis').default;
const { createClient } = require('redis');

const COOKIE_NAME = 'sid';

// Returns { app, store } for a connected node-redis `client`.
function createApp({ client, prefix = 'sess:', maxAgeMs = 3600 * 1000, rolling = true,
                     scanCount, secret = 'sessiond client test secret' }) {
  const store = new RedisStore({ client, prefix, scanCount });
  const app = express();
  app.use(express.json({ limit: '256kb' }));
  app.use(session({
    name: COOKIE_NAME,
    store,
    secret,
    resave: false,
    saveUninitialized: false,
    rolling,
    cookie: { httpOnly: true, sameSite: 'lax', maxAge: maxAgeMs },
  }));

  const view = (req) => ({
    id: req.sessionID,
    user: req.session.user ?? null,
    views: req.session.views ?? 0,
    cart: req.session.cart ?? [],
    blob: req.session.blob ?? null,
  });

  app.get('/visit', (req, res) => {
    req.session.views = (req.session.views ?? 0) + 1;
    res.json(view(req));
  });

  app.post('/login', (req, res, next) => {
    const user = req.body?.user;
    if (typeof user !== 'string' || user === '') {
      return res.status(400).json({ error: 'user required' });
    }
    const previousId = req.sessionID;
    const views = req.session.views;
    // A new id on login (session fixation); the old session is destroyed in the store.
    req.session.regenerate((err) => {
      if (err) return next(err);
      req.session.user = user;
      if (views !== undefined) req.session.views = views;
      req.session.loginAt = Date.now();
      req.session.save((err2) => {
        if (err2) return next(err2);
        res.json({ ...view(req), previousId });
      });
    });
  });

  app.get('/me', (req, res) => {
    res.json(view(req));
  });

  app.post('/cart', (req, res) => {
    if (!req.session.user) return res.status(401).json({ error: 'login first' });
    const item = req.body?.item;
    if (typeof item !== 'string') return res.status(400).json({ error: 'item required' });
    req.session.cart = [...(req.session.cart ?? []), item];
    res.json(view(req));
  });

  app.post('/blob', (req, res) => {
    if (!req.session.user) return res.status(401).json({ error: 'login first' });
    req.session.blob = req.body?.blob ?? null;
    res.json({ id: req.sessionID, length: (req.session.blob ?? '').length });
  });

  app.post('/touch', (req, res, next) => {
    if (!req.session.user) return res.status(401).json({ error: 'login first' });
    req.session.touch();
    store.touch(req.sessionID, req.session, (err) => {
      if (err) return next(err);
      res.json(view(req));
    });
  });

  app.post('/logout', (req, res, next) => {
    const id = req.sessionID;
    req.session.destroy((err) => {
      if (err) return next(err);
      res.clearCookie(COOKIE_NAME);
      res.json({ destroyed: id });
    });
  });

  // Store errors (a refused command, a lost connection) become 500s with the message, so a
  // failing test shows what the store said.
  // eslint-disable-next-line no-unused-vars
  app.use((err, req, res, next) => {
    res.status(500).json({ error: String(err && err.message ? err.message : err) });
  });

  return { app, store };
}

module.exports = { createApp, COOKIE_NAME };

if (require.main === module) {
  (async () => {
    const url = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
    const client = createClient({ url, name: 'express-app' });
    client.on('error', (err) => console.error('redis client:', err.message));
    await client.connect();
    const { app } = createApp({ client });
    const server = app.listen(Number(process.argv[2] ?? 3000), '127.0.0.1', () => {
      console.log(`listening on http://127.0.0.1:${server.address().port} (store ${url})`);
    });
    const stop = () => server.close(() => client.quit().finally(() => process.exit(0)));
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  })().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
