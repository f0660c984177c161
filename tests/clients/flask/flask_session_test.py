"""Flask-Session's Redis backend (Debian's python3-flask-session 0.3.2 with redis-py 4.3 and
Flask 2.2) against the RESP server at REDIS_URL: login, read, a second user, logout, the TTL
that every request renews, and expiry. Run with Debian's /usr/bin/python3 (run.sh does).

Flask-Session's RedisSessionInterface stores a session as one pickled value,
SETEX session:<sid> <PERMANENT_SESSION_LIFETIME in s> <pickle>, on every request whose session
is not empty; GET session:<sid> to load it; DEL session:<sid> when a modified session is
empty (logout). The app is driven through Flask's test client (cookies kept per client); a
separate redis-py client looks at the store directly.

Prints one line per check (a transcript that run.sh compares between Redis and sessiond) and
exits 1 on the first failure.
"""

import os
import pickle
import sys
import time
from datetime import timedelta

import flask
import flask_session
import redis

LIFETIME_S = 3  # PERMANENT_SESSION_LIFETIME: SETEX's TTL (whole seconds)
PREFIX = "session:"
DEADLINE_S = 15  # for every wait on a condition


def check(cond, what):
    if not cond:
        print(f"FAIL {what}", flush=True)
        sys.exit(1)
    print(f"ok   {what}", flush=True)


def wait_for(predicate, what, deadline_s=DEADLINE_S):
    """Polls predicate every 20 ms until it is true or deadline_s passes."""
    end = time.monotonic() + deadline_s
    while True:
        if predicate():
            check(True, what)
            return
        if time.monotonic() > end:
            check(False, f"{what} (not within {deadline_s} s)")
        time.sleep(0.02)


def make_app(url):
    app = flask.Flask("sessiond-flask-test")
    app.config.update(
        SECRET_KEY="flask-test-secret",  # for SESSION_USE_SIGNER
        SESSION_TYPE="redis",
        SESSION_REDIS=redis.Redis.from_url(url),
        SESSION_KEY_PREFIX=PREFIX,
        SESSION_USE_SIGNER=True,
        SESSION_PERMANENT=True,
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=LIFETIME_S),
    )
    flask_session.Session(app)

    @app.post("/login")
    def login():
        flask.session["user"] = flask.request.form["user"]
        flask.session["visits"] = 0
        return "logged in"

    @app.get("/me")
    def me():
        return {"user": flask.session.get("user"), "visits": flask.session.get("visits")}

    @app.post("/visit")
    def visit():
        flask.session["visits"] = flask.session.get("visits", 0) + 1
        return {"visits": flask.session["visits"]}

    @app.post("/logout")
    def logout():
        flask.session.clear()
        return "logged out"

    return app


def session_cookie(client):
    for cookie in client.cookie_jar:
        if cookie.name == "session":
            return cookie.value
    return None


def main():
    url = os.environ["REDIS_URL"]
    store = redis.Redis.from_url(url)  # looks at the store directly
    check(store.ping() is True, "PING")
    for key in store.keys(PREFIX + "*"):  # a rerun against a development server
        store.delete(key)

    app = make_app(url)
    alice = app.test_client()
    bob = app.test_client()

    # A first visit: Flask-Session 0.3.2 marks a new session permanent (a "_permanent" entry),
    # so even an anonymous session is not empty and is stored (SETEX) with a cookie.
    r = alice.get("/me")
    check(r.status_code == 200 and r.json == {"user": None, "visits": None}, "anonymous read")
    keys = store.keys(PREFIX + "*")
    check(len(keys) == 1, "one session stored after the first visit")
    key = keys[0].decode()
    sid = key[len(PREFIX):]
    cookie = session_cookie(alice)
    check(cookie is not None and cookie.startswith(sid + "."), "cookie carries the signed sid")
    check("user" not in pickle.loads(store.get(key)), "the stored session has no user")

    # Login: SETEX session:<sid> 3 <pickle> under the same sid.
    r = alice.post("/login", data={"user": "alice"})
    check(r.status_code == 200, "login")
    check(store.keys(PREFIX + "*") == [key.encode()], "login keeps the session id")
    stored = pickle.loads(store.get(key))
    check(stored.get("user") == "alice" and stored.get("visits") == 0,
          "stored value unpickles to the session")
    pttl = store.pttl(key)
    check(0 < pttl <= LIFETIME_S * 1000, "TTL of a fresh session is the lifetime")

    # Reads and writes through the cookie.
    r = alice.get("/me")
    check(r.json == {"user": "alice", "visits": 0}, "read after login")
    for i in range(1, 4):
        r = alice.post("/visit")
        check(r.json == {"visits": i}, f"visit {i} counted")
    check(pickle.loads(store.get(key))["visits"] == 3, "store holds the last write")

    # A second user has a separate session.
    bob.post("/login", data={"user": "bob"})
    check(session_cookie(bob) != session_cookie(alice), "second user gets another sid")
    check(bob.get("/me").json == {"user": "bob", "visits": 0}, "second user reads own session")
    check(alice.get("/me").json == {"user": "alice", "visits": 3}, "first user unaffected")
    check(len(store.keys(PREFIX + "*")) == 2, "two sessions stored")

    # Every request re-sends SETEX: a read renews the TTL.
    wait_for(lambda: 0 < store.pttl(key) <= LIFETIME_S * 1000 - 1000,
             "the TTL runs down between requests")
    alice.get("/me")
    check(store.pttl(key) > LIFETIME_S * 1000 - 1000, "a request renews the TTL")

    check(bob.get("/me").json == {"user": "bob", "visits": 0}, "second user still logged in")

    # Logout: the session is cleared, the key deleted, the cookie removed.
    r = alice.post("/logout")
    check(r.status_code == 200, "logout")
    check(store.exists(key) == 0, "logout deletes the stored session")
    check(session_cookie(alice) is None, "logout removes the cookie")
    check(alice.get("/me").json == {"user": None, "visits": None}, "read after logout")
    check(store.exists(key) == 0, "the old session stays deleted")

    # Expiry: bob stops making requests; his session is gone after the lifetime, and the
    # same cookie then reads an empty session.
    bob_key = PREFIX + session_cookie(bob).rsplit(".", 1)[0]
    check(pickle.loads(store.get(bob_key))["user"] == "bob", "bob's session is stored")
    wait_for(lambda: store.get(bob_key) is None, "the session expires after its lifetime")
    check(store.ttl(bob_key) == -2, "TTL of the expired session is -2")
    check(session_cookie(bob) is not None, "the browser still sends its cookie")
    check(bob.get("/me").json == {"user": None, "visits": None}, "read after expiry is anonymous")
    fresh = pickle.loads(store.get(bob_key) or pickle.dumps({}))
    check("user" not in fresh, "the read stored a fresh anonymous session under the same sid")

    print("flask-session: all checks passed", flush=True)


if __name__ == "__main__":
    main()
