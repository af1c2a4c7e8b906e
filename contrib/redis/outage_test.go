package bgredis_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgpool/bgpool"
	bgredis "github.com/bgpool/bgpool/contrib/redis"
)

// Settings of the outage tests: a short timeout and probe interval, so that
// an outage shows and ends within the test's phases.
const (
	outageTimeout = 100 * time.Millisecond
	outageProbe   = 100 * time.Millisecond
	outageWorkers = 4
)

// submitFor submits a counting task to p every millisecond for d, far
// faster than any limit of these tests, and returns when d has passed.
func submitFor(t *testing.T, p *bgpool.Pool, d time.Duration, task bgpool.Task) {
	t.Helper()
	submitUntil(t, p, d, task, func() bool { return false })
}

// submitUntil submits as submitFor does until done reports true, which it
// then reports, or until d has passed. The pool needs tasks for the limiter
// to decide, and so to probe Redis.
func submitUntil(t *testing.T, p *bgpool.Pool, d time.Duration, task bgpool.Task, done func() bool) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !done() {
		select {
		case <-tick.C: // the next task
			if err := p.Submit(ctx, task); err != nil && ctx.Err() == nil {
				require.NoError(t, err)
			}
		case <-ctx.Done(): // the phase is over
			return false
		}
	}
	return true
}

// TestRedisKilledMidRun runs a pool against a redis-server of its own, kills
// the server with SIGKILL mid-run, then starts it again on the same port,
// once per mode. While Redis is down each mode does what its option says,
// nothing hangs, and Stats and the log report the outage once; when Redis
// is back the shared limit holds again.
func TestRedisKilledMidRun(t *testing.T) {
	const perSecond = 50 // the Redis limit, with a burst of 50
	const down = time.Second

	tests := []struct {
		name string
		opt  bgredis.Option
		// checkDown checks what happened while Redis was down, given the
		// starts in that phase, how long it lasted, and the pool's and the
		// limiter's Stats after it.
		checkDown func(t *testing.T, starts int64, elapsed time.Duration, ps bgpool.Stats, ls bgredis.Stats)
	}{
		{
			name: "fails open: tasks start without a limit",
			opt:  bgredis.WithFailOpen(),
			checkDown: func(t *testing.T, starts int64, elapsed time.Duration, ps bgpool.Stats, ls bgredis.Stats) {
				assert.Greater(t, float64(starts), 4*perSecond*elapsed.Seconds(),
					"got %d starts in %v, want far more than the limit's %d/s", starts, elapsed, perSecond)
				assert.GreaterOrEqual(t, ls.FallbackAllowed, uint64(starts)-outageWorkers, "FallbackAllowed: tokens given without Redis")
				assert.Zero(t, ls.FallbackRefused)
				assert.Zero(t, ps.Dropped)
			},
		},
		{
			name: "fails closed: tasks are dropped and counted",
			opt:  bgredis.WithFailClosed(),
			checkDown: func(t *testing.T, starts int64, elapsed time.Duration, ps bgpool.Stats, ls bgredis.Stats) {
				assert.LessOrEqual(t, starts, int64(outageWorkers), "got %d starts with Redis down, want none but tokens taken before the kill", starts)
				assert.Greater(t, ps.Dropped, uint64(500), "got %d tasks dropped in %v, want most of the ~1000 submitted", ps.Dropped, elapsed)
				assert.InDelta(t, ls.FallbackRefused, ps.Dropped, outageWorkers, "each refusal is one task the pool dropped (checked exactly after Shutdown)")
				assert.Zero(t, ls.FallbackAllowed)
			},
		},
		{
			name: "falls back to a local rate: starts are capped by it",
			opt:  bgredis.WithFallbackRate(20, 1),
			checkDown: func(t *testing.T, starts int64, elapsed time.Duration, ps bgpool.Stats, ls bgredis.Stats) {
				ceiling := 1 + 20*elapsed.Seconds() + outageWorkers // burst, rate, tokens taken before the kill
				assert.LessOrEqual(t, float64(starts), ceiling, "got %d starts in %v, want at most %.0f at the fallback's 20/s", starts, elapsed, ceiling)
				assert.GreaterOrEqual(t, float64(starts), 0.5*20*elapsed.Seconds(), "got %d starts in %v: the fallback let too few through", starts, elapsed)
				assert.Zero(t, ps.Dropped)
				assert.Zero(t, ls.FallbackRefused)
				assert.Positive(t, ls.FallbackAllowed)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			port := freePort(t)
			srv := startRedis(t, port)
			rdb := redis.NewClient(&redis.Options{Addr: srv.addr()}) // go-redis' defaults: reads bounded by 3s, not by contexts
			t.Cleanup(func() { _ = rdb.Close() })
			logs := new(logRecorder)
			lim := bgredis.NewLimiter(rdb, uniqueKey(t), redis_rate.PerSecond(perSecond), tt.opt,
				bgredis.WithTimeout(outageTimeout), bgredis.WithProbeInterval(outageProbe), bgredis.WithLogger(slog.New(logs)))
			stats := lim.Stats
			p := newPool(t, outageWorkers, lim, bgpool.WithQueueSize(16))
			var starts atomic.Int64
			task := func(context.Context) error {
				starts.Add(1)
				return nil
			}

			// Up: the shared limit holds.
			begin := time.Now()
			submitFor(t, p, 500*time.Millisecond, task)
			up := starts.Load()
			assert.LessOrEqual(t, float64(up), perSecond+perSecond*time.Since(begin).Seconds()+1, "starts with Redis up")
			require.Zero(t, stats().RedisErrors, "Redis errors with Redis up")

			// Down.
			srv.kill()
			killed := time.Now()
			atKill := starts.Load()
			submitFor(t, p, down, task)
			elapsed := time.Since(killed)
			ls := stats()
			assert.True(t, ls.Down, "Down")
			assert.Equal(t, uint64(1), ls.Outages, "Outages")
			assert.Positive(t, ls.RedisErrors, "RedisErrors")
			assert.LessOrEqual(t, ls.RedisErrors, uint64(2*down/outageProbe+outageWorkers),
				"got %d Redis errors in %v, want about one per probe interval of %v", ls.RedisErrors, elapsed, outageProbe)
			assert.Contains(t, []bgredis.Cause{bgredis.CauseRefused, bgredis.CauseNetwork}, ls.LastCause,
				"a killed server refuses new connections and resets open ones; the last error: %s", ls.LastError)
			assert.Equal(t, 1, logs.count(logDown), "the outage is logged once")
			assert.Zero(t, logs.count(logBack))
			tt.checkDown(t, starts.Load()-atKill, elapsed, p.Stats(), ls)
			t.Logf("down %v: %d starts, pool %+v, limiter %+v", elapsed.Round(time.Millisecond), starts.Load()-atKill, p.Stats(), ls)

			// Back, on the same port: an empty Redis, whose burst is full again.
			// The next decision that falls on a probe finds it.
			startRedis(t, port)
			require.True(t, submitUntil(t, p, 5*time.Second, task, func() bool { return !stats().Down }),
				"the limiter did not find Redis back within 5s")
			back := time.Now()
			atBack := starts.Load()
			errorsAtBack := stats().RedisErrors
			submitFor(t, p, 500*time.Millisecond, task)
			assert.LessOrEqual(t, float64(starts.Load()-atBack), perSecond+perSecond*time.Since(back).Seconds()+outageWorkers+1,
				"starts with Redis back: the shared limit holds again")
			assert.Equal(t, errorsAtBack, stats().RedisErrors, "no Redis errors once back; the last: %v", stats().LastError)
			assert.Equal(t, 1, logs.count(logBack), "the recovery is logged once; the log:\n%s", logs)
			assert.Equal(t, 1, logs.count(logDown), "the outage is logged once; the log:\n%s", logs)

			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			start := time.Now()
			_ = p.Shutdown(ctx)
			assert.Less(t, time.Since(start), 2*time.Second, "Shutdown took %v", time.Since(start))
			assert.Equal(t, p.Stats().Dropped, stats().FallbackRefused, "Dropped: each refusal is one task the pool dropped")
		})
	}
}

// TestRedisStopsAnswering pauses the server with SIGSTOP: connections stay
// open and no answer comes. go-redis on its defaults waits that out for 3s
// per read, and retries; with ContextTimeoutEnabled it stops at the
// context's deadline. The Limiter gives up after its timeout either way.
func TestRedisStopsAnswering(t *testing.T) {
	for _, contextTimeouts := range []bool{false, true} {
		t.Run(fmt.Sprintf("ContextTimeoutEnabled=%v", contextTimeouts), func(t *testing.T) {
			srv := startRedis(t, freePort(t))
			rdb := redis.NewClient(&redis.Options{Addr: srv.addr(), ContextTimeoutEnabled: contextTimeouts})
			t.Cleanup(func() { _ = rdb.Close() })
			logs := new(logRecorder)
			lim := bgredis.NewLimiter(rdb, uniqueKey(t), redis_rate.PerSecond(100), bgredis.WithFailClosed(),
				bgredis.WithTimeout(outageTimeout), bgredis.WithProbeInterval(time.Hour), bgredis.WithLogger(slog.New(logs)))
			ok, _ := lim.Allow()
			require.True(t, ok, "Allow with the server answering")

			srv.pause()
			defer srv.resume() // a call left waiting for its answer ends once the server answers
			start := time.Now()
			ok, retryAfter := lim.Allow()
			elapsed := time.Since(start)
			assert.False(t, ok, "Allow fails closed")
			assert.Less(t, elapsed, outageTimeout+500*time.Millisecond, "got Allow after %v, want it after the %v timeout", elapsed, outageTimeout)
			assert.Greater(t, retryAfter, 50*time.Minute, "got retryAfter %v, want the time until the next probe, an hour away", retryAfter)

			start = time.Now()
			err := lim.Wait(context.Background())
			assert.ErrorIs(t, err, bgredis.ErrUnavailable)
			assert.ErrorIs(t, err, context.DeadlineExceeded, "the cause: the timeout of the last call")
			assert.Less(t, time.Since(start), 10*time.Millisecond, "while down, no call waits for Redis")

			st := lim.Stats()
			assert.True(t, st.Down)
			assert.Equal(t, uint64(1), st.RedisErrors)
			assert.Equal(t, uint64(2), st.FallbackRefused)
			assert.Equal(t, bgredis.CauseTimeout, st.LastCause)
			assert.Equal(t, fmt.Sprintf("no answer from Redis within %v: context deadline exceeded", outageTimeout), st.LastError)
			assert.Equal(t, 1, logs.count("WARN bgredis: Redis did not answer in time; "+logDown), "the log:\n%s", logs)
		})
	}
}

// TestRedisUnreachableFromTheStart points Limiters at a port where nothing
// listens.
func TestRedisUnreachableFromTheStart(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	newLimiter := func(t *testing.T, logs *logRecorder, opts ...bgredis.Option) *bgredis.Limiter {
		rdb := redis.NewClient(&redis.Options{Addr: addr})
		t.Cleanup(func() { _ = rdb.Close() })
		opts = append(opts, bgredis.WithTimeout(outageTimeout), bgredis.WithProbeInterval(time.Hour), bgredis.WithLogger(slog.New(logs)))
		return bgredis.NewLimiter(rdb, uniqueKey(t), redis_rate.PerSecond(10), opts...)
	}

	t.Run("by default decides at the limit's rate in this process", func(t *testing.T) {
		logs := new(logRecorder)
		lim := newLimiter(t, logs)
		start := time.Now()
		for i := range 10 {
			ok, _ := lim.Allow()
			assert.True(t, ok, "Allow %d within the fallback's burst of 10", i)
		}
		ok, retryAfter := lim.Allow()
		assert.False(t, ok, "Allow past the fallback's burst")
		assert.InDelta(t, 100*time.Millisecond, retryAfter, float64(20*time.Millisecond), "got retryAfter %v, want about 1/10s", retryAfter)
		assert.Less(t, time.Since(start), outageTimeout+500*time.Millisecond, "no hang")
		require.NoError(t, lim.Wait(context.Background()), "Wait takes the fallback's next token")

		assert.Equal(t, bgredis.Stats{
			Down: true, Outages: 1, RedisErrors: 1, FallbackAllowed: 11,
			LastCause: bgredis.CauseRefused, LastError: lim.Stats().LastError,
		}, lim.Stats(), "one Redis call, then the fallback until the next probe")
		assert.Contains(t, lim.Stats().LastError, "connect: connection refused")
		assert.Equal(t, 1, logs.count("WARN bgredis: Redis refused the connection; "+logDown), "the log:\n%s", logs)
	})

	t.Run("fails open", func(t *testing.T) {
		lim := newLimiter(t, new(logRecorder), bgredis.WithFailOpen())
		for range 100 {
			ok, _ := lim.Allow()
			require.True(t, ok)
		}
		assert.Equal(t, uint64(100), lim.Stats().FallbackAllowed)
	})

	t.Run("fails closed: the pool drops every task and reports ErrUnavailable", func(t *testing.T) {
		lim := newLimiter(t, new(logRecorder), bgredis.WithFailClosed())
		var refused atomic.Int64
		p, err := bgpool.New(2, bgpool.WithLimiter(lim), bgpool.WithErrorHandler(func(_ context.Context, err error) {
			if errors.Is(err, bgredis.ErrUnavailable) {
				refused.Add(1)
			}
		}))
		require.NoError(t, err)
		for range 5 {
			require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
				t.Error("a task ran while Redis was unreachable and the limiter failed closed")
				return nil
			}))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		require.NoError(t, p.Shutdown(ctx))
		assert.Less(t, time.Since(start), outageTimeout+time.Second, "no hang")
		assert.Equal(t, uint64(5), p.Stats().Dropped, "Dropped")
		assert.Equal(t, int64(5), refused.Load(), "errors matching ErrUnavailable passed to the error handler")
		assert.Equal(t, uint64(5), lim.Stats().FallbackRefused, "FallbackRefused")
	})
}
