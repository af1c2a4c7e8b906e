package bgredis_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	bgredis "github.com/bgpool/bgpool/contrib/redis"
)

// BenchmarkAllow measures one decision: redis_rate's Allow alone (the
// floor: one script call on loopback); bgredis' Allow on top of it, with a
// client on go-redis' defaults (a goroutine per call), with one that has
// ContextTimeoutEnabled (none), and from 8 goroutines; bgredis while Redis
// is down (the fallback bucket, no network); and an x/time/rate limiter in
// process for scale. The limit is so high that every call takes a
// token.
func BenchmarkAllow(b *testing.B) {
	rdb := sharedRedis(b)
	limit := redis_rate.Limit{Rate: 1_000_000_000, Burst: 1_000_000_000, Period: time.Second}

	b.Run("redis_rate", func(b *testing.B) {
		rl := redis_rate.NewLimiter(rdb)
		key := uniqueKey(b)
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if res, err := rl.Allow(ctx, key, limit); err != nil || res.Allowed == 0 {
				b.Fatal(res, err)
			}
		}
	})

	b.Run("bgredis/client=default", func(b *testing.B) {
		lim := bgredis.NewLimiter(rdb, uniqueKey(b), limit, quiet) // a goroutine per call
		b.ReportAllocs()
		for b.Loop() {
			if ok, _ := lim.Allow(); !ok {
				b.Fatal("not allowed")
			}
		}
	})

	b.Run("bgredis/client=ContextTimeoutEnabled", func(b *testing.B) {
		ctxRDB := redis.NewClient(&redis.Options{Addr: sharedAddr, ContextTimeoutEnabled: true})
		defer ctxRDB.Close()
		lim := bgredis.NewLimiter(ctxRDB, uniqueKey(b), limit, quiet) // calls on the caller's goroutine
		b.ReportAllocs()
		for b.Loop() {
			if ok, _ := lim.Allow(); !ok {
				b.Fatal("not allowed")
			}
		}
	})

	b.Run("bgredis/goroutines=8", func(b *testing.B) {
		lim := bgredis.NewLimiter(rdb, uniqueKey(b), limit, quiet)
		b.ReportAllocs()
		b.SetParallelism(max(1, 8/runtime.GOMAXPROCS(0))) // 8 goroutines in all where GOMAXPROCS divides 8
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if ok, _ := lim.Allow(); !ok {
					b.Error("not allowed")
					return
				}
			}
		})
	})

	b.Run("bgredis/redis-down", func(b *testing.B) {
		down := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", freePort(b))})
		defer down.Close()
		lim := bgredis.NewLimiter(down, uniqueKey(b), limit, quiet, bgredis.WithProbeInterval(time.Hour))
		lim.Allow() // the one call to Redis, which takes it as down
		b.ReportAllocs()
		for b.Loop() {
			if ok, _ := lim.Allow(); !ok {
				b.Fatal("not allowed")
			}
		}
	})

	b.Run("x-time-rate", func(b *testing.B) {
		lim := rate.NewLimiter(rate.Limit(limit.Rate), limit.Burst)
		b.ReportAllocs()
		for b.Loop() {
			if !lim.Allow() {
				b.Fatal("not allowed")
			}
		}
	})
}
