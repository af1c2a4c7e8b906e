package bgredis_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	bgredis "github.com/bgpool/bgpool/contrib/redis"
)

// The password of the tests' redis-server with requirepass, and of its ACL
// users: one that may not run scripts, and one with only what the README
// says a Limiter needs.
const (
	serverPassword = "bgredis-test-secret"
	noScriptUser   = "no-scripts"
	limiterUser    = "limiter"
)

// authRedis starts a redis-server of the test's own that requires
// serverPassword, with a user noScriptUser (password serverPassword) that may
// run every command but EVALSHA and EVAL, the calls of redis_rate, and a
// user limiterUser that may run only those and the script's own commands,
// on keys rate:*.
func authRedis(t *testing.T) *redisServer {
	t.Helper()
	srv := startRedisWithPassword(t, freePort(t), serverPassword)
	admin := redis.NewClient(&redis.Options{Addr: srv.addr(), Password: serverPassword})
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	require.NoError(t, admin.Do(ctx, "ACL", "SETUSER", noScriptUser, "on", ">"+serverPassword, "~*", "&*", "+@all", "-evalsha", "-eval").Err())
	require.NoError(t, admin.Do(ctx, "ACL", "SETUSER", limiterUser, "on", ">"+serverPassword, "~rate:*",
		"+evalsha", "+eval", "+get", "+set", "+time").Err())
	return srv
}

// hangUpServer listens on loopback and closes every connection as soon as
// it accepts it, as a proxy with no backend does. It returns the address,
// and stops when the test ends.
func hangUpServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil { // the listener is closed: the test is over
				return
			}
			_ = conn.Close()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	return ln.Addr().String()
}

// TestFailuresNameTheirCause checks the log line and Stats of a Limiter whose
// first call fails: each names what went wrong (the credentials, a refused
// connection, a closed client) with Redis' or the network's own error, never
// a guess, and configuration errors are logged at Error level.
func TestFailuresNameTheirCause(t *testing.T) {
	srv := authRedis(t)
	refusedAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t)) // nothing listens there
	hangUpAddr := hangUpServer(t)

	tests := []struct {
		name      string
		opts      redis.Options
		newClient func(redis.Options) redis.UniversalClient // nil: redis.NewClient
		close     bool                                      // close the client before the call
		level     slog.Level
		log       string // what the log line says happened
		cause     string // Stats' cause, as JSON gives it
		err       string // the real error, in the log line and in Stats
	}{
		{
			name:  "a wrong password is a configuration error: Redis rejected the credentials",
			opts:  redis.Options{Addr: srv.addr(), Password: "wrong"},
			level: slog.LevelError,
			log:   "Redis rejected the credentials",
			cause: "auth",
			err:   "WRONGPASS",
		},
		{
			name:  "no password where Redis requires one is a configuration error",
			opts:  redis.Options{Addr: srv.addr()},
			level: slog.LevelError,
			log:   "Redis rejected the credentials",
			cause: "auth",
			err:   "NOAUTH",
		},
		{
			name:  "a user that may not run scripts is a configuration error",
			opts:  redis.Options{Addr: srv.addr(), Username: noScriptUser, Password: serverPassword},
			level: slog.LevelError,
			log:   "Redis denied the user a command",
			cause: "permission",
			err:   "NOPERM",
		},
		{
			name:  "a closed client is a configuration error",
			opts:  redis.Options{Addr: srv.addr(), Password: serverPassword},
			close: true,
			level: slog.LevelError,
			log:   "the Redis client is closed",
			cause: "closed",
			err:   "client is closed",
		},
		{
			name:  "a refused connection says so, on go-redis' defaults",
			opts:  redis.Options{Addr: refusedAddr},
			level: slog.LevelWarn,
			log:   "Redis refused the connection",
			cause: "refused",
			err:   "connect: connection refused",
		},
		{
			name:  "a refused connection says so, with ContextTimeoutEnabled",
			opts:  redis.Options{Addr: refusedAddr, ContextTimeoutEnabled: true},
			level: slog.LevelWarn,
			log:   "Redis refused the connection",
			cause: "refused",
			err:   "connect: connection refused",
		},
		{
			name:  "a server that hangs up at once is a failed connection",
			opts:  redis.Options{Addr: hangUpAddr, MaxRetries: -1},
			level: slog.LevelWarn,
			log:   "the connection to Redis failed",
			cause: "network",
			err:   "EOF",
		},
		{
			name: "a refused connection says so, on a ClusterClient",
			opts: redis.Options{Addr: refusedAddr},
			newClient: func(o redis.Options) redis.UniversalClient {
				return redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{o.Addr}})
			},
			level: slog.LevelWarn,
			log:   "Redis refused the connection",
			cause: "refused",
			err:   "connect: connection refused",
		},
		{
			name: "a refused connection says so, on a Ring",
			opts: redis.Options{Addr: refusedAddr},
			newClient: func(o redis.Options) redis.UniversalClient {
				return redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"shard": o.Addr}})
			},
			level: slog.LevelWarn,
			log:   "Redis refused the connection",
			cause: "refused",
			err:   "connect: connection refused",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rdb redis.UniversalClient
			if tt.newClient != nil {
				rdb = tt.newClient(tt.opts)
			} else {
				rdb = redis.NewClient(&tt.opts)
			}
			t.Cleanup(func() { _ = rdb.Close() })
			logs := new(logRecorder)
			lim := bgredis.NewLimiter(rdb, uniqueKey(t), redis_rate.PerSecond(10),
				bgredis.WithTimeout(outageTimeout), bgredis.WithProbeInterval(time.Hour), bgredis.WithLogger(slog.New(logs)))
			if tt.close {
				require.NoError(t, rdb.Close())
			}

			ok, _ := lim.Allow()
			assert.True(t, ok, "the fallback rate gives the token")

			require.Equal(t, 1, logs.count("bgredis:"), "got, want one log line; the log:\n%s", logs)
			line := logs.String()
			assert.Contains(t, line, tt.level.String()+" bgredis: "+tt.log, "the level and what happened")
			assert.Contains(t, line, tt.err, "the real error")
			assert.NotContains(t, line, "no answer", "a guess at a timeout")

			st := lim.Stats()
			assert.True(t, st.Down)
			assert.Contains(t, fmt.Sprint(st.LastError), tt.err, "Stats' last error")
			js, err := json.Marshal(st)
			require.NoError(t, err)
			assert.Contains(t, string(js), `"last_cause":"`+tt.cause+`"`)
			assert.Contains(t, string(js), tt.err, "the JSON of Stats carries the error's message")
		})
	}
}

// TestACLUserWithTheREADMEPermissionsLimits checks the README's ACL for a
// Limiter's user: EVALSHA and EVAL, and the script's GET, SET and TIME, on
// keys rate:*.
func TestACLUserWithTheREADMEPermissionsLimits(t *testing.T) {
	srv := authRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.addr(), Username: limiterUser, Password: serverPassword})
	t.Cleanup(func() { _ = rdb.Close() })
	logs := new(logRecorder)
	lim := bgredis.NewLimiter(rdb, uniqueKey(t), redis_rate.PerMinute(2), bgredis.WithLogger(slog.New(logs)))
	require.NoError(t, lim.Check(context.Background()))
	for _, want := range []bool{true, true, false} {
		ok, _ := lim.Allow()
		assert.Equal(t, want, ok)
	}
	assert.Equal(t, bgredis.Stats{}, lim.Stats(), "no Redis error, no fallback")
	assert.Empty(t, logs.String())
}

// TestStatsMarshalToJSON checks that Stats serialises with snake_case names
// and the last error as its message, which encoding/json would otherwise
// write as {}.
func TestStatsMarshalToJSON(t *testing.T) {
	t.Run("with no error, the counters and no last error", func(t *testing.T) {
		js, err := json.Marshal(bgredis.Stats{})
		require.NoError(t, err)
		assert.JSONEq(t, `{"down":false,"outages":0,"redis_errors":0,"fallback_allowed":0,"fallback_refused":0}`, string(js))
	})

	t.Run("after a failure, the last error's message and its cause", func(t *testing.T) {
		rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", freePort(t))})
		t.Cleanup(func() { _ = rdb.Close() })
		lim := bgredis.NewLimiter(rdb, uniqueKey(t), redis_rate.PerSecond(10), quiet,
			bgredis.WithTimeout(outageTimeout), bgredis.WithProbeInterval(time.Hour))
		lim.Allow()
		js, err := json.Marshal(lim.Stats())
		require.NoError(t, err)
		var got map[string]any
		require.NoError(t, json.Unmarshal(js, &got), "%s", js)
		assert.Equal(t, true, got["down"], "%s", js)
		assert.Equal(t, float64(1), got["redis_errors"], "%s", js)
		assert.Equal(t, float64(1), got["fallback_allowed"], "%s", js)
		assert.Equal(t, "refused", got["last_cause"], "%s", js)
		msg, _ := got["last_error"].(string)
		assert.Contains(t, msg, "connection refused", "%s", js)
	})
}

// TestCheck checks the startup check: nil when Redis answers, taking no
// token; an error naming the cause when it does not; and no change to
// Stats or the log either way.
func TestCheck(t *testing.T) {
	srv := authRedis(t)

	t.Run("returns nil when Redis answers, and takes no token", func(t *testing.T) {
		logs := new(logRecorder)
		lim := bgredis.NewLimiter(sharedRedis(t), uniqueKey(t), redis_rate.PerHour(1), bgredis.WithLogger(slog.New(logs)))
		for range 3 {
			require.NoError(t, lim.Check(context.Background()))
		}
		ok, _ := lim.Allow()
		assert.True(t, ok, "the hour's one token is still there")
		assert.Equal(t, bgredis.Stats{}, lim.Stats())
		assert.Empty(t, logs.String())
	})

	tests := []struct {
		name string
		opts redis.Options
		want string
		is   func(error) bool
	}{
		{"names a wrong password", redis.Options{Addr: srv.addr(), Password: "wrong"},
			"bgredis: Redis rejected the credentials: WRONGPASS", redis.IsAuthError},
		{"names a user denied the script", redis.Options{Addr: srv.addr(), Username: noScriptUser, Password: serverPassword},
			"bgredis: Redis denied the user a command: NOPERM", redis.IsPermissionError},
		{"names a refused connection", redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", freePort(t))},
			fmt.Sprintf("bgredis: no connection to Redis within %v: dial tcp", outageTimeout), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rdb := redis.NewClient(&tt.opts)
			t.Cleanup(func() { _ = rdb.Close() })
			logs := new(logRecorder)
			lim := bgredis.NewLimiter(rdb, uniqueKey(t), redis_rate.PerSecond(10),
				bgredis.WithTimeout(outageTimeout), bgredis.WithLogger(slog.New(logs)))
			err := lim.Check(context.Background())
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			if tt.is != nil {
				assert.True(t, tt.is(err), "go-redis' own test sees through the error: %v", err)
			}
			assert.Equal(t, bgredis.Stats{}, lim.Stats(), "Check changes no counter")
			assert.Empty(t, logs.String(), "Check logs nothing")
		})
	}

	t.Run("returns the context's error when it is done", func(t *testing.T) {
		lim := bgredis.NewLimiter(sharedRedis(t), uniqueKey(t), redis_rate.PerSecond(10), quiet)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		assert.ErrorIs(t, lim.Check(ctx), context.Canceled)
	})
}

// TestFailClosedWaitWrapsTheCause checks that Wait's error, while a
// Limiter that fails closed decides without Redis, carries the cause for
// errors.Is and go-redis' tests.
func TestFailClosedWaitWrapsTheCause(t *testing.T) {
	srv := authRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.addr(), Password: "wrong"})
	t.Cleanup(func() { _ = rdb.Close() })
	lim := bgredis.NewLimiter(rdb, uniqueKey(t), redis_rate.PerSecond(10), quiet, bgredis.WithFailClosed())
	err := lim.Wait(context.Background())
	assert.ErrorIs(t, err, bgredis.ErrUnavailable)
	assert.True(t, redis.IsAuthError(err), "got %v, want an error that wraps WRONGPASS", err)
	assert.Contains(t, err.Error(), "Redis rejected the credentials: WRONGPASS")
}

// TestTimeoutWhileDiallingSaysSo gives the client a dialer that hangs, as a
// dial to a host that drops packets does: the call that the timeout ends
// reports that no connection was made, not that Redis did not answer.
func TestTimeoutWhileDiallingSaysSo(t *testing.T) {
	released := make(chan struct{})
	rdb := redis.NewClient(&redis.Options{
		Addr:          "127.0.0.1:6379",
		DialerRetries: 1,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			select {
			case <-released: // the test is over
			case <-ctx.Done(): // go-redis' DialTimeout
			}
			return nil, errors.New("the test's dialer gave up")
		},
	})
	t.Cleanup(func() {
		close(released)
		_ = rdb.Close()
	})
	lim := bgredis.NewLimiter(rdb, uniqueKey(t), redis_rate.PerSecond(10), quiet, bgredis.WithTimeout(outageTimeout))
	lim.Allow()
	st := lim.Stats()
	assert.Equal(t, bgredis.CauseTimeout, st.LastCause)
	assert.Equal(t, fmt.Sprintf("no connection to Redis within %v (still dialling): context deadline exceeded", outageTimeout), st.LastError)
}

// TestCauseIsConfig checks which causes are configuration errors: those
// that Redis coming back does not mend.
func TestCauseIsConfig(t *testing.T) {
	for _, c := range []bgredis.Cause{bgredis.CauseAuth, bgredis.CausePermission, bgredis.CauseClosed} {
		assert.True(t, c.IsConfig(), "%s is a configuration error", c)
	}
	for _, c := range []bgredis.Cause{bgredis.CauseRefused, bgredis.CauseTimeout, bgredis.CauseNetwork, bgredis.CauseRedis, bgredis.CauseOther, ""} {
		assert.False(t, c.IsConfig(), "%q is no configuration error", c)
	}
}

// goRedisLogEnv, set in a child process of TestGoRedisLoggerIsLeftAlone,
// keeps go-redis' own logger as go-redis sets it (TestMain quietens it
// otherwise).
const goRedisLogEnv = "BGREDIS_TEST_GOREDIS_LOG"

// TestGoRedisLoggerIsLeftAlone checks that bgredis does not silence
// go-redis' process-wide logger, which go-redis has no per-client
// alternative to. The test binary runs itself as a child process that keeps
// go-redis' default logger (stderr) and makes a Limiter's dials fail: the
// child's stderr has go-redis' own line beside the Limiter's. The README
// says how a program silences go-redis, if it wants to.
func TestGoRedisLoggerIsLeftAlone(t *testing.T) {
	if os.Getenv(goRedisLogEnv) != "" {
		rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", freePort(t))})
		defer rdb.Close()
		lim := bgredis.NewLimiter(rdb, uniqueKey(t), redis_rate.PerSecond(10), bgredis.WithTimeout(outageTimeout),
			bgredis.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, nil))))
		lim.Allow()
		time.Sleep(2 * time.Second) // go-redis logs once its 5 dials, 100ms apart, have failed
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestGoRedisLoggerIsLeftAlone$", "-test.count=1")
	cmd.Env = append(os.Environ(), goRedisLogEnv+"=1")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "the child failed:\n%s", out)
	assert.Contains(t, string(out), "redis: connection pool: failed to dial after", "go-redis' own line")
	assert.Contains(t, string(out), "bgredis: Redis refused the connection", "the Limiter's line")
}

// TestTurnToAConfigurationErrorIsLogged starts with nothing on the port,
// then starts a redis-server there that requires a password the client
// does not give: the outage, logged as a refused connection, turns into a
// configuration error, which the log reports once more, at Error level.
func TestTurnToAConfigurationErrorIsLogged(t *testing.T) {
	port := freePort(t)
	rdb := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port)})
	t.Cleanup(func() { _ = rdb.Close() })
	logs := new(logRecorder)
	lim := bgredis.NewLimiter(rdb, uniqueKey(t), redis_rate.PerSecond(1000),
		bgredis.WithTimeout(outageTimeout), bgredis.WithProbeInterval(outageProbe), bgredis.WithLogger(slog.New(logs)))
	lim.Allow()
	require.Equal(t, 1, logs.count("WARN bgredis: Redis refused the connection; deciding without Redis"), "the log:\n%s", logs)

	startRedisWithPassword(t, port, serverPassword)
	deadline := time.Now().Add(5 * time.Second)
	for lim.Stats().LastCause != bgredis.CauseAuth && time.Now().Before(deadline) {
		lim.Allow() // one decision per probe interval asks Redis
		time.Sleep(5 * time.Millisecond)
	}
	for range 3 { // more probes that fail the same way log nothing more
		time.Sleep(outageProbe)
		lim.Allow()
	}
	st := lim.Stats()
	assert.Equal(t, bgredis.CauseAuth, st.LastCause, "the last error: %s", st.LastError)
	assert.Equal(t, uint64(1), st.Outages, "one outage, whose cause changed")
	assert.Equal(t, 2, logs.count("bgredis:"), "the log:\n%s", logs)
	assert.Equal(t, 1, logs.count("ERROR bgredis: Redis rejected the credentials; still deciding without Redis"), "the log:\n%s", logs)
	assert.Equal(t, 1, logs.count("was=refused"), "the log:\n%s", logs)
}
