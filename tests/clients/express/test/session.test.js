'use strict';
// express-session + connect-redis + node-redis, end to end over HTTP, against the RESP server
// named by REDIS_URL (sessiond's RESP listener under run.sh, or a real redis-server). A second
// node-redis client (`redis`) looks at the store directly: keys, TTLs, stored JSON.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Agent, COOKIE_NAME, call, connectRedis, startApp, waitFor } = require('./helpers');

const MAX_AGE_MS = 3600 * 1000; // cookie maxAge of the main app: one hour
const MAX_AGE_S = MAX_AGE_MS / 1000;
const PREFIX = 'sess:';
const ENUM_PREFIX = 'sessenum:'; // the store-enumeration test's own key space
// A command that never gets a reply fails its test instead of hanging the run.
const T = { timeout: 30000 };

// The store's TTL of a freshly saved or touched session: connect-redis sends
// SET key value EX ceil(remaining ms / 1000), or EXPIRE key ceil(...).
function assertFreshTtl(ttl, maxAgeS, what) {
  assert.ok(ttl >= maxAgeS - 2 && ttl <= maxAgeS,
    `${what}: TTL ${ttl} should be within [${maxAgeS - 2}, ${maxAgeS}]`);
}

// express-session computes the cookie's originalMaxAge as expires - now, a millisecond or so
// under maxAge when the clock ticks in between.
function assertOriginalMaxAge(ms) {
  assert.ok(ms > MAX_AGE_MS - 1000 && ms <= MAX_AGE_MS, `cookie.originalMaxAge ${ms}`);
}

describe('express-session with connect-redis over RESP', { timeout: 90000 }, () => {
  let redis; // a separate node-redis client that inspects the store
  let main; // the main app: one hour sessions, rolling cookies
  let mainB; // a second instance of the same app (own connection), sharing the store

  before(async () => {
    redis = await connectRedis('express-test-inspector');
    main = await startApp({ prefix: PREFIX, maxAgeMs: MAX_AGE_MS, rolling: true });
    mainB = await startApp({ prefix: PREFIX, maxAgeMs: MAX_AGE_MS, rolling: true,
      clientName: 'express-session-store-b' });
    // Start from an empty key space for both prefixes (reruns against a development server).
    await call(main.store, 'clear');
    const enumStore = await startApp({ prefix: ENUM_PREFIX }); // only for its clear()
    await call(enumStore.store, 'clear');
    await enumStore.close();
    assert.equal(await call(main.store, 'length'), 0);
  });

  after(async () => {
    await main?.close();
    await mainB?.close();
    if (redis) {
      // No client saw an error event (connection reset, protocol error) during the run.
      const errors = [...redis.errors, ...(main?.client.errors ?? []), ...(mainB?.client.errors ?? [])];
      await redis.quit();
      assert.deepEqual(errors.map(String), []);
    }
  });

  it('connects: PING, CLIENT SETNAME sent by node-redis on connect', T, async () => {
    assert.equal(await redis.ping(), 'PONG');
    assert.equal(await redis.clientGetName(), 'express-test-inspector');
    assert.equal(await redis.get('sess:no-such-session'), null);
    assert.equal(await call(main.store, 'get', 'no-such-session'), undefined);
  });

  it('a visit without a cookie gets a session once the session is saved', T, async () => {
    const agent = new Agent(main.base);
    // Nothing stored in the session: no cookie, nothing saved (saveUninitialized: false).
    let r = await agent.get('/me');
    assert.equal(r.status, 200);
    assert.equal(r.json.user, null);
    assert.deepEqual(r.setCookies, []);
    assert.equal(agent.sessionId(), null);

    r = await agent.get('/visit');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.views, 1);
    assert.equal(r.setCookies.length, 1);
    assert.match(r.setCookies[0], new RegExp(`^${COOKIE_NAME}=s%3A`));
    const id = agent.sessionId();
    assert.equal(id, r.json.id);
    assert.equal(await redis.exists(PREFIX + id), 1);
    const stored = JSON.parse(await redis.get(PREFIX + id));
    assert.equal(stored.views, 1);
    assertOriginalMaxAge(stored.cookie.originalMaxAge);
    assert.equal(stored.cookie.httpOnly, true);

    r = await agent.get('/visit');
    assert.equal(r.json.views, 2);
    assert.equal(r.json.id, id);
    assert.equal(JSON.parse(await redis.get(PREFIX + id)).views, 2);
  });

  it('login regenerates the session id and destroys the old session', T, async () => {
    const agent = new Agent(main.base);
    await agent.get('/visit');
    const oldId = agent.sessionId();
    const oldCookie = agent.sessionCookie();
    assert.ok(oldId);
    assert.equal(await redis.exists(PREFIX + oldId), 1);

    const r = await agent.post('/login', { user: 'alice' });
    assert.equal(r.status, 200, r.text);
    const newId = agent.sessionId();
    assert.ok(newId);
    assert.notEqual(newId, oldId);
    assert.notEqual(agent.sessionCookie().value, oldCookie.value);
    assert.equal(r.json.id, newId);
    assert.equal(r.json.previousId, oldId);
    assert.equal(r.json.user, 'alice');
    assert.equal(r.json.views, 1, 'the app carries the visit count over to the new session');

    assert.equal(await redis.exists(PREFIX + oldId), 0, 'old session key is gone');
    assert.equal(await redis.get(PREFIX + oldId), null);
    const stored = JSON.parse(await redis.get(PREFIX + newId));
    assert.equal(stored.user, 'alice');

    // The old cookie no longer opens a session.
    const attacker = new Agent(main.base);
    attacker.jar.set(COOKIE_NAME, { ...oldCookie, expires: null });
    const me = await attacker.get('/me');
    assert.equal(me.json.user, null);
    assert.notEqual(me.json.id, oldId);
    assert.equal(await redis.exists(PREFIX + oldId), 0);

    // The new cookie does.
    const again = await agent.get('/me');
    assert.equal(again.json.user, 'alice');
    assert.equal(again.json.id, newId);
  });

  it('data written in one request is read in the next', T, async () => {
    const agent = new Agent(main.base);
    await agent.post('/login', { user: 'bob' });
    assert.equal((await agent.post('/cart', { item: 'apple' })).json.cart.length, 1);
    assert.deepEqual((await agent.post('/cart', { item: 'pear' })).json.cart, ['apple', 'pear']);
    let me = await agent.get('/me');
    assert.equal(me.json.user, 'bob');
    assert.deepEqual(me.json.cart, ['apple', 'pear']);

    // A larger value with non-ASCII text survives the round trip byte for byte.
    const blob = 'ünïcødé ✓ セッション 🍪 '.repeat(600) + 'end';
    const w = await agent.post('/blob', { blob });
    assert.equal(w.status, 200, w.text);
    assert.equal(w.json.length, blob.length);
    me = await agent.get('/me');
    assert.equal(me.json.blob, blob);
    assert.deepEqual(me.json.cart, ['apple', 'pear']);
    assert.equal(JSON.parse(await redis.get(PREFIX + agent.sessionId())).blob, blob);

    // Another instance of the app, with its own connection, sees the same session.
    const viaB = await agent.get(mainB.base + '/me');
    assert.equal(viaB.json.user, 'bob');
    assert.equal(viaB.json.blob, blob);
  });

  it('the store TTL matches the cookie maxAge', T, async () => {
    const agent = new Agent(main.base);
    const before = Date.now();
    await agent.post('/login', { user: 'carol' });
    const id = agent.sessionId();
    assertFreshTtl(await redis.ttl(PREFIX + id), MAX_AGE_S, 'after login');
    // The cookie's Expires (1 s resolution) is maxAge from now.
    const { expires } = agent.sessionCookie();
    assert.ok(Math.abs(expires - (before + MAX_AGE_MS)) <= 3000,
      `cookie expires ${new Date(expires).toISOString()} vs maxAge from ${new Date(before).toISOString()}`);
    assert.equal(await redis.ttl(PREFIX + 'no-such-session'), -2);
  });

  it('a rolling read and an explicit touch extend the TTL', T, async () => {
    const agent = new Agent(main.base);
    await agent.post('/login', { user: 'dave' });
    const key = PREFIX + agent.sessionId();

    // Shorten the key's life behind the app's back, then read through the app.
    assert.equal(await redis.expire(key, 5), true);
    let ttl = await redis.ttl(key);
    assert.ok(ttl >= 4 && ttl <= 5, `TTL after EXPIRE 5: ${ttl}`);
    const r = await agent.get('/me');
    assert.equal(r.json.user, 'dave');
    assertFreshTtl(await redis.ttl(key), MAX_AGE_S, 'after a rolling read (EXPIRE by store.touch)');
    assert.equal(r.setCookies.length, 1, 'rolling: the cookie is sent again');

    assert.equal(await redis.expire(key, 5), true);
    ttl = await redis.ttl(key);
    assert.ok(ttl >= 4 && ttl <= 5, `TTL after EXPIRE 5: ${ttl}`);
    const t = await agent.post('/touch');
    assert.equal(t.status, 200, t.text);
    assertFreshTtl(await redis.ttl(key), MAX_AGE_S, 'after POST /touch');
    // The touch changed only the expiry: the data is intact.
    assert.equal(JSON.parse(await redis.get(key)).user, 'dave');
    assert.equal((await agent.get('/me')).json.user, 'dave');
  });

  it('logout destroys the session', T, async () => {
    const agent = new Agent(main.base);
    await agent.post('/login', { user: 'erin' });
    const id = agent.sessionId();
    const cookie = agent.sessionCookie();
    assert.equal(await redis.exists(PREFIX + id), 1);

    const r = await agent.post('/logout');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.destroyed, id);
    assert.equal(await redis.exists(PREFIX + id), 0);
    assert.equal(agent.sessionCookie(), null, 'the cookie is cleared');
    assert.equal(await call(main.store, 'get', id), undefined);

    // Next request: no user, whether the browser dropped the cookie or replays it.
    assert.equal((await agent.get('/me')).json.user, null);
    const replay = new Agent(main.base);
    replay.jar.set(COOKIE_NAME, { ...cookie, expires: null });
    const me = await replay.get('/me');
    assert.equal(me.json.user, null);
    assert.equal(await redis.exists(PREFIX + id), 0, 'a replayed cookie does not bring it back');
  });

  it('a session ends when its store TTL runs out', T, async () => {
    const short = await startApp({ prefix: PREFIX, maxAgeMs: 1500, rolling: false,
      clientName: 'express-session-store-short' });
    try {
      const agent = new Agent(short.base);
      await agent.post('/login', { user: 'frank' });
      const savedAt = Date.now();
      const id = agent.sessionId();
      const cookie = agent.sessionCookie();
      const key = PREFIX + id;
      const ttl = await redis.ttl(key);
      // connect-redis: SET key value EX ceil(1.5) = 2
      assert.ok(ttl >= 1 && ttl <= 2, `TTL of a 1.5 s session: ${ttl}`);
      assert.equal(JSON.parse(await redis.get(key)).user, 'frank');

      // Watch the key from the side (a request through the app would touch it).
      await waitFor(`${key} to expire`, async () => (await redis.exists(key)) === 0,
        { timeoutMs: 10000, intervalMs: 100 });
      const lived = Date.now() - savedAt;
      assert.ok(lived >= 1000, `the key expired after ${lived} ms, before its 2 s TTL`);
      assert.equal(await redis.get(key), null);
      assert.equal(await redis.ttl(key), -2);

      // The (replayed) cookie no longer opens the session.
      const replay = new Agent(short.base);
      replay.jar.set(COOKIE_NAME, { ...cookie, expires: null });
      const me = await replay.get('/me');
      assert.equal(me.json.user, null);
      assert.notEqual(me.json.id, id);
    } finally {
      await short.close();
    }
  });

  it('20 parallel clients each keep their own session', T, async () => {
    const N = 20;
    const agents = Array.from({ length: N }, () => new Agent(main.base));
    const results = await Promise.all(agents.map(async (agent, i) => {
      // Alternate between the two app instances, as behind a load balancer.
      const base = (k) => ((i + k) % 2 === 0 ? main.base : mainB.base);
      await agent.get(base(0) + '/visit');
      const first = agent.sessionId();
      await agent.post(base(1) + '/login', { user: `user-${i}` });
      await agent.post(base(2) + '/cart', { item: `item-${i}-a` });
      await agent.post(base(3) + '/cart', { item: `item-${i}-b` });
      await agent.get(base(4) + '/visit');
      const me = await agent.get(base(5) + '/me');
      return { i, first, id: agent.sessionId(), me: me.json };
    }));

    const ids = new Set();
    for (const { i, first, id, me } of results) {
      assert.notEqual(first, id, `client ${i}: login regenerated the id`);
      assert.equal(me.id, id);
      assert.equal(me.user, `user-${i}`);
      assert.deepEqual(me.cart, [`item-${i}-a`, `item-${i}-b`]);
      assert.equal(me.views, 2);
      ids.add(id);
    }
    assert.equal(ids.size, N, 'every client has its own session id');

    // The store agrees: MGET of every key returns each client's own data.
    const keys = results.map((r) => PREFIX + r.id);
    const values = await redis.mGet(keys);
    values.forEach((raw, idx) => {
      assert.ok(raw, `${keys[idx]} is stored`);
      const sess = JSON.parse(raw);
      assert.equal(sess.user, `user-${results[idx].i}`);
      assert.deepEqual(sess.cart, [`item-${results[idx].i}-a`, `item-${results[idx].i}-b`]);
    });
    // The pre-login sessions are all gone.
    assert.equal(await redis.exists(results.map((r) => PREFIX + r.first)), 0);
  });

  it('connect-redis all(), length(), ids() and clear() see exactly the sessions (SCAN+MGET, SCAN+DEL)', T, async () => {
    // A small SCAN COUNT makes connect-redis walk several cursors.
    const app = await startApp({ prefix: ENUM_PREFIX, maxAgeMs: MAX_AGE_MS, scanCount: 5,
      clientName: 'express-session-store-enum' });
    try {
      assert.equal(await call(app.store, 'length'), 0);
      assert.deepEqual(await call(app.store, 'ids'), []);
      assert.deepEqual(await call(app.store, 'all'), []);

      // A session under the main prefix that clear() of this store must leave alone.
      const bystander = new Agent(main.base);
      await bystander.post('/login', { user: 'bystander' });
      const bystanderKey = PREFIX + bystander.sessionId();

      // Enough sessions that SCAN pages end in the middle of the server's internal buckets
      // (several keys per bucket), logged in 50 at a time.
      const N = 200;
      const agents = Array.from({ length: N }, () => new Agent(app.base));
      for (let start = 0; start < N; start += 50) {
        await Promise.all(agents.slice(start, start + 50).map(async (a, j) => {
          const r = await a.post('/login', { user: `enum-${start + j}` });
          assert.equal(r.status, 200, r.text);
        }));
      }
      const expected = new Map(agents.map((a, i) => [a.sessionId(), `enum-${i}`]));
      assert.equal(expected.size, N);

      // connect-redis walks SCAN MATCH sessenum:* COUNT 5 with node-redis's scanIterator,
      // which turns each cursor into a JS number: a cursor above 2^53 comes back rounded.
      const ids = await call(app.store, 'ids');
      assert.deepEqual(new Set(ids), new Set(expected.keys()), 'SCAN finds every session');
      assert.equal(ids.length, N, `SCAN returns each key once (${ids.length - new Set(ids).size} duplicates)`);
      assert.equal(await call(app.store, 'length'), N);

      const all = await call(app.store, 'all');
      assert.equal(all.length, N);
      for (const sess of all) {
        assert.equal(sess.user, expected.get(sess.id), `session ${sess.id}`);
        assertOriginalMaxAge(sess.cookie.originalMaxAge);
      }

      // The main prefix holds the other tests' sessions; they are not counted here but are
      // visible to the main store.
      const mainIds = new Set(await call(main.store, 'ids'));
      assert.ok(mainIds.has(bystander.sessionId()));
      for (const id of expected.keys()) assert.ok(!mainIds.has(id));

      await call(app.store, 'clear');
      assert.equal(await call(app.store, 'length'), 0);
      assert.equal(await redis.exists([...expected.keys()].map((id) => ENUM_PREFIX + id)), 0);
      assert.equal(await redis.exists(bystanderKey), 1, 'clear() deleted only its own prefix');
      assert.equal((await agents[0].get('/me')).json.user, null);
      assert.equal((await bystander.get('/me')).json.user, 'bystander');

      // clear() on the main store empties it too.
      await call(main.store, 'clear');
      assert.equal(await call(main.store, 'length'), 0);
      assert.equal(await redis.exists(bystanderKey), 0);
    } finally {
      await app.close();
    }
  });
});
