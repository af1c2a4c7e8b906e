package bgredis_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	bgredis "github.com/bgpool/bgpool/contrib/redis"
)

// quiet is a logger that drops everything.
var quiet = bgredis.WithLogger(slog.New(slog.DiscardHandler))

func TestAllow(t *testing.T) {
	rdb := sharedRedis(t)

	t.Run("gives the burst at once, then says how long until the next token", func(t *testing.T) {
		lim := bgredis.NewLimiter(rdb, uniqueKey(t), redis_rate.Limit{Rate: 3, Burst: 3, Period: time.Minute}, quiet)
		for i := range 3 {
			ok, retryAfter := lim.Allow()
			assert.True(t, ok, "Allow %d within the burst", i)
			assert.Zero(t, retryAfter)
		}
		ok, retryAfter := lim.Allow()
		assert.False(t, ok, "Allow past the burst")
		assert.Greater(t, retryAfter, 19*time.Second, "got retryAfter %v, want about 20s (a minute / 3)", retryAfter)
		assert.LessOrEqual(t, retryAfter, 20*time.Second)
		assert.Equal(t, bgredis.Stats{}, lim.Stats(), "no Redis error, no fallback")
	})

	t.Run("limiters on one key share one limit", func(t *testing.T) {
		key := uniqueKey(t)
		limit := redis_rate.PerMinute(4)
		a := bgredis.NewLimiter(rdb, key, limit, quiet)
		b := bgredis.NewLimiter(sharedRedis(t), key, limit, quiet) // another connection pool, as in another process
		var allowed int
		for range 4 {
			for _, lim := range []*bgredis.Limiter{a, b} {
				if ok, _ := lim.Allow(); ok {
					allowed++
				}
			}
		}
		assert.Equal(t, 4, allowed, "got, want tokens out of 8 tries on one key of 4/min")
	})

	t.Run("takes an error answer as Redis down, in the last mode given", func(t *testing.T) {
		key := uniqueKey(t)
		require.NoError(t, rdb.HSet(context.Background(), "rate:"+key, "not", "a rate").Err()) // the script's GET answers WRONGTYPE
		t.Cleanup(func() { rdb.Del(context.Background(), "rate:"+key) })
		logs := new(logRecorder)
		lim := bgredis.NewLimiter(rdb, key, redis_rate.PerSecond(1),
			bgredis.WithFailClosed(), bgredis.WithFailOpen(), bgredis.WithLogger(slog.New(logs)))
		ok, _ := lim.Allow()
		assert.True(t, ok, "fails open: WithFailOpen came last")
		st := lim.Stats()
		assert.True(t, st.Down)
		assert.Equal(t, uint64(1), st.RedisErrors)
		assert.Equal(t, uint64(1), st.FallbackAllowed)
		assert.Equal(t, bgredis.CauseRedis, st.LastCause)
		assert.Contains(t, st.LastError, "Redis answered with an error: WRONGTYPE")
		assert.Equal(t, 1, logs.count("WARN bgredis: Redis answered with an error; "+logDown), "the log:\n%s", logs)
	})
}

func TestWait(t *testing.T) {
	rdb := sharedRedis(t)

	t.Run("sleeps until the next token is due", func(t *testing.T) {
		lim := bgredis.NewLimiter(rdb, uniqueKey(t), redis_rate.Limit{Rate: 10, Burst: 1, Period: time.Second}, quiet)
		ctx := context.Background()
		require.NoError(t, lim.Wait(ctx))
		start := time.Now()
		require.NoError(t, lim.Wait(ctx))
		require.NoError(t, lim.Wait(ctx))
		elapsed := time.Since(start)
		assert.GreaterOrEqual(t, elapsed, 150*time.Millisecond, "two more tokens at 10/s with burst 1")
		assert.Less(t, elapsed, time.Second)
	})

	t.Run("returns the context's error when it ends", func(t *testing.T) {
		lim := bgredis.NewLimiter(rdb, uniqueKey(t), redis_rate.PerHour(1), quiet)
		require.NoError(t, lim.Wait(context.Background()))
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := lim.Wait(ctx) // the next token is an hour away
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Less(t, time.Since(start), time.Second, "Wait outlived its context")
		assert.Equal(t, bgredis.Stats{}, lim.Stats(), "the caller's deadline is no Redis error")
	})

	t.Run("returns at once for a context already done", func(t *testing.T) {
		lim := bgredis.NewLimiter(rdb, uniqueKey(t), redis_rate.PerHour(1), quiet)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		assert.ErrorIs(t, lim.Wait(ctx), context.Canceled)
		ok, _ := lim.Allow()
		assert.True(t, ok, "the cancelled Wait took no token")
	})

	t.Run("Shutdown's deadline ends a worker's wait", func(t *testing.T) {
		lim := bgredis.NewLimiter(rdb, uniqueKey(t), redis_rate.PerHour(1), quiet)
		p := newPool(t, 1, lim)
		var ran atomic.Int64
		for range 2 {
			require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
				ran.Add(1)
				return nil
			}))
		}
		require.Eventually(t, func() bool { return ran.Load() == 1 }, 5*time.Second, 5*time.Millisecond,
			"the first task has the hour's token")

		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := p.Shutdown(ctx) // the second task waits for a token an hour away
		elapsed := time.Since(start)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Less(t, elapsed, 2*time.Second, "got Shutdown after %v, want soon after its 200ms deadline", elapsed)
		st := p.Stats()
		assert.Equal(t, uint64(1), st.Completed, "Completed")
		assert.Equal(t, uint64(1), st.Abandoned, "Abandoned: the task whose wait the deadline ended")
		assert.Equal(t, uint64(0), st.Dropped, "Dropped")
		assert.Equal(t, int64(1), ran.Load())
		assert.Equal(t, bgredis.Stats{}, lim.Stats(), "the deadline is no Redis error")
	})
}

func TestNewLimiterPanicsOnBadInput(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: sharedAddr}) // never dialled: NewLimiter makes no call
	defer rdb.Close()
	valid := redis_rate.PerSecond(10)
	tests := []struct {
		name string
		make func()
		want string
	}{
		{"a nil client", func() { bgredis.NewLimiter(nil, "k", valid) }, "client must not be nil"},
		{"a typed nil client", func() { bgredis.NewLimiter((*redis.Client)(nil), "k", valid) }, "client must not be nil"},
		{"an empty key", func() { bgredis.NewLimiter(rdb, "", valid) }, "key must not be empty"},
		{"a zero limit", func() { bgredis.NewLimiter(rdb, "k", redis_rate.Limit{}) }, "invalid limit"},
		{"a zero burst", func() { bgredis.NewLimiter(rdb, "k", redis_rate.Limit{Rate: 1, Period: time.Second}) }, "invalid limit"},
		{"a zero period", func() { bgredis.NewLimiter(rdb, "k", redis_rate.Limit{Rate: 1, Burst: 1}) }, "invalid limit"},
		{"a negative rate", func() { bgredis.NewLimiter(rdb, "k", redis_rate.Limit{Rate: -1, Burst: 1, Period: time.Second}) }, "invalid limit"},
		{"a nil option", func() { bgredis.NewLimiter(rdb, "k", valid, nil) }, "option 0 is nil"},
		{"a negative timeout", func() { bgredis.NewLimiter(rdb, "k", valid, bgredis.WithTimeout(-time.Second)) }, "WithTimeout(-1s)"},
		{"a negative probe interval", func() { bgredis.NewLimiter(rdb, "k", valid, bgredis.WithProbeInterval(-1)) }, "WithProbeInterval(-1ns)"},
		{"a zero fallback rate", func() { bgredis.NewLimiter(rdb, "k", valid, bgredis.WithFallbackRate(0, 1)) }, "WithFallbackRate(0, 1)"},
		{"a fallback burst of 0", func() { bgredis.NewLimiter(rdb, "k", valid, bgredis.WithFallbackRate(5, 0)) }, "WithFallbackRate(5, 0)"},
	}
	for _, tt := range tests {
		t.Run("panics on "+tt.name, func(t *testing.T) {
			got := recovered(tt.make)
			require.NotNil(t, got, "NewLimiter did not panic")
			msg := fmt.Sprint(got)
			assert.True(t, strings.HasPrefix(msg, "bgredis: "), "got panic %q, want the bgredis: prefix", msg)
			assert.Contains(t, msg, tt.want)
		})
	}

	t.Run("accepts an infinite fallback rate with no burst", func(t *testing.T) {
		assert.Nil(t, recovered(func() { bgredis.NewLimiter(rdb, "k", valid, bgredis.WithFallbackRate(rate.Inf, 0)) }))
	})
}

// recovered runs f and returns what it panicked with, or nil.
func recovered(f func()) (v any) {
	defer func() { v = recover() }()
	f()
	return nil
}
