# Rack::Session::Redis (Debian's ruby-redis-rack 2.1.2 on ruby-redis-store 1.9.0, ruby-redis 4.8
# and ruby-rack 2.2) against the RESP server at REDIS_URL (redis://HOST:PORT): a Rack app with
# expire_after driven through Rack::MockRequest (create, read, update, destroy, expiry, a
# session store on database 3), and redis-store's setnx with an expiry called directly.
#
# What the libraries send (their sources under /usr/share/rubygems-integration/all/gems):
#   rack/session/redis.rb   find_session: GET <ns>:2::<sha256(public id)>, then GET <ns>:<public
#                           id> (the pre-2.2 key); write_session: SETEX key <expire_after>
#                           <Marshal>; delete_session: DEL <ns>:<public id>, DEL <ns>:<private id>
#   redis/store/ttl.rb      setnx with :expires_in / :expire_after: MULTI, SETNX key value,
#                           EXPIRE key ttl, EXEC (setnx_with_expire); generate_unique_sid uses
#                           it for a non-empty session
#   redis (redis-rb 4.8)    SELECT n on connect when the URL names database n != 0
# A plain Redis client (redis-rb) looks at the store directly.
#
# Prints one line per check (run.sh compares the transcripts of Redis and sessiond) and exits 1
# on the first failure.

require 'rack'
require 'rack/mock'
require 'redis-rack'
require 'redis-store'
require 'redis'

EXPIRE_AFTER = 3 # seconds: SETEX's TTL
NAMESPACE = 'rack:session'
DEADLINE = 15 # seconds, for every wait on a condition

$stdout.sync = true
# redis-store 1.9 calls redis-rb 4.8's multi with a block that takes no argument, which redis-rb
# reports as deprecated on every call; the commands sent are the same (MULTI ... EXEC).
Redis.silence_deprecations = true

def check(cond, what)
  unless cond
    puts "FAIL #{what}"
    exit 1
  end
  puts "ok   #{what}"
end

# Polls the block every 20 ms until it is true or DEADLINE passes.
def wait_for(what)
  deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + DEADLINE
  loop do
    return check(true, what) if yield
    check(false, "#{what} (not within #{DEADLINE} s)") if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
    sleep 0.02
  end
end

APP = lambda do |env|
  req = Rack::Request.new(env)
  session = env['rack.session']
  body = case req.path_info
         when '/login'
           session['user'] = req.params['user']
           session['count'] = 0
           'logged in'
         when '/read'
           "user=#{session['user'].inspect} count=#{session['count'].inspect}"
         when '/update'
           session['count'] += 1
           "count=#{session['count']}"
         when '/logout'
           env['rack.session.options'][:drop] = true # delete_session, no new cookie
           'logged out'
         else
           return [404, { 'content-type' => 'text/plain' }, ['not found']]
         end
  [200, { 'content-type' => 'text/plain' }, [body]]
end

# A browser: keeps the rack.session cookie between requests.
class Browser
  attr_reader :cookie, :last

  def initialize(app)
    @mock = Rack::MockRequest.new(app)
    @cookie = nil
  end

  def get(path)
    env = @cookie ? { 'HTTP_COOKIE' => "rack.session=#{@cookie}" } : {}
    @last = @mock.get(path, env)
    set_cookie = @last.headers['Set-Cookie']
    if set_cookie && (m = set_cookie.match(/rack\.session=([^;]*)/))
      @cookie = m[1]
    end
    @last.body
  end
end

def private_key(public_id)
  "#{NAMESPACE}:#{Rack::Session::SessionId.new(public_id).private_id}"
end

url = ENV.fetch('REDIS_URL')
store = Redis.new(url: "#{url}/0")
check(store.ping == 'PONG', 'PING')
store.keys("#{NAMESPACE}:*").each { |k| store.del(k) } # a rerun against a development server
store.keys('cache:*').each { |k| store.del(k) }

stack = Rack::Session::Redis.new(APP, redis_server: "#{url}/0/#{NAMESPACE}", expire_after: EXPIRE_AFTER)
alice = Browser.new(stack)
bob = Browser.new(stack)

# create
check(alice.get('/login?user=alice') == 'logged in', 'login')
check(!alice.cookie.nil?, 'login sets the session cookie')
key = private_key(alice.cookie)
check(store.keys("#{NAMESPACE}:*") == [key], 'one session stored under the hashed (private) id')
check(Marshal.load(store.get(key)) == { 'user' => 'alice', 'count' => 0 }, 'stored value is the Marshal of the session')
ttl = store.ttl(key)
check(ttl.between?(EXPIRE_AFTER - 1, EXPIRE_AFTER), 'TTL is expire_after')

# read and update
check(alice.get('/read') == 'user="alice" count=0', 'read')
(1..3).each { |i| check(alice.get('/update') == "count=#{i}", "update #{i}") }
check(Marshal.load(store.get(key))['count'] == 3, 'store holds the last update')

# a second user
bob.get('/login?user=bob')
check(bob.cookie != alice.cookie, 'second user gets another id')
check(bob.get('/read') == 'user="bob" count=0', 'second user reads own session')
check(alice.get('/read') == 'user="alice" count=3', 'first user unaffected')

# expire_after slides: every request with a session writes it again (SETEX)
wait_for('the TTL runs down between requests') { store.pttl(key).between?(1, EXPIRE_AFTER * 1000 - 1000) }
alice.get('/read')
check(store.pttl(key) > EXPIRE_AFTER * 1000 - 1000, 'a request renews the TTL')
check(bob.get('/read') == 'user="bob" count=0', 'second user still logged in')

# destroy
check(alice.get('/logout') == 'logged out', 'logout')
check(store.exists?(key) == false, 'logout deletes the stored session')
check(alice.last.headers['Set-Cookie'].nil?, 'a dropped session sets no new cookie')
check(alice.get('/read') == 'user=nil count=nil', 'the old cookie reads an empty session')
check(store.exists?(key) == false, 'the old session stays deleted')

# expiry: bob makes no request for longer than expire_after
bob_key = private_key(bob.cookie)
check(Marshal.load(store.get(bob_key))['user'] == 'bob', "bob's session is stored")
wait_for('the session expires after expire_after') { store.get(bob_key).nil? }
check(store.ttl(bob_key) == -2, 'TTL of the expired session is -2')
check(bob.get('/read') == 'user=nil count=nil', 'read after expiry is an empty session')

# redis-store's setnx with an expiry: MULTI, SETNX, EXPIRE, EXEC
cache = Redis::Store::Factory.create("#{url}/0/cache")
check(cache.setnx('lock', 'first', expires_in: 30) == [true, true], 'setnx with expires_in on a new key: [true, true]')
check(cache.get('lock') == 'first', 'setnx stored the value')
check(store.ttl('cache:lock').between?(29, 30), 'setnx set the TTL')
check(cache.setnx('lock', 'second', expires_in: 60) == [false, true], 'setnx on an existing key: [false, true]')
check(cache.get('lock') == 'first', 'setnx kept the first value')
check(store.ttl('cache:lock').between?(59, 60), "the EXEC'd EXPIRE moved the TTL")
check(cache.setnx('short', 'x', expires_in: 1) == [true, true], 'setnx with a 1 s expiry')
wait_for('the setnx key expires') { store.exists?('cache:short') == false }
check(cache.setnx('short', 'y', expires_in: 30) == [true, true], 'setnx succeeds again once it expired')
check(cache.get('short') == 'y', 'the new value is stored')
check(cache.setnx('plain', 'z') == true, 'setnx without an expiry is a plain SETNX')
check(store.ttl('cache:plain') == -1, 'no TTL without an expiry')

# Rack::Session::Redis#generate_unique_sid: a non-empty session is claimed with setnx + expiry
sid = stack.generate_unique_sid({ 'seed' => 1 })
claimed = "#{NAMESPACE}:#{sid.private_id}"
check(Marshal.load(store.get(claimed)) == { 'seed' => 1 }, 'generate_unique_sid stored the session with setnx')
check(store.ttl(claimed).between?(EXPIRE_AFTER - 1, EXPIRE_AFTER), 'generate_unique_sid set expire_after')

# a session store on database 3 (SELECT 3 on connect): its keys are not in database 0
db3 = Rack::Session::Redis.new(APP, redis_server: "#{url}/3/#{NAMESPACE}", expire_after: EXPIRE_AFTER)
carol = Browser.new(db3)
carol.get('/login?user=carol')
check(carol.get('/read') == 'user="carol" count=0', 'a store on database 3 reads its session')
carol_key = private_key(carol.cookie)
check(store.exists?(carol_key) == false, 'database 0 does not see it')
store3 = Redis.new(url: "#{url}/3")
check(Marshal.load(store3.get(carol_key))['user'] == 'carol', 'database 3 holds it')
check(carol.get('/logout') == 'logged out' && store3.exists?(carol_key) == false, 'logout on database 3')

puts 'rack-session: all checks passed'
