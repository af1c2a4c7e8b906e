package bgredis_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"strconv"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/bgpool/bgpool"
	bgredis "github.com/bgpool/bgpool/contrib/redis"
)

// A pool whose tasks start at no more than 100/s across every process that
// uses the key "mail" (here with a suffix, so that each run of the example
// starts afresh). It needs Redis at 127.0.0.1:6379.
func Example() {
	rdb := redis.NewClient(&redis.Options{
		Addr:                  "127.0.0.1:6379",
		ContextTimeoutEnabled: true, // calls end at their deadline: no goroutine per decision
	})
	defer rdb.Close()

	key := "mail:" + strconv.FormatInt(time.Now().UnixNano(), 36)
	lim := bgredis.NewLimiter(rdb, key, redis_rate.PerSecond(100)) // while Redis is down: 100/s in this process
	p, err := bgpool.New(4, bgpool.WithLimiter(lim))
	if err != nil {
		log.Fatal(err)
	}
	for range 10 {
		_ = p.Submit(context.Background(), func(context.Context) error {
			return nil // send a mail
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}

	st := lim.Stats()
	fmt.Println("completed:", p.Stats().Completed)
	fmt.Println("Redis down:", st.Down, "errors:", st.RedisErrors)
	// Output:
	// completed: 10
	// Redis down: false errors: 0
}

// A limiter that must never be exceeded refuses tasks while Redis is
// unreachable (here nothing listens on port 1): the pool drops them, counts
// them, and reports ErrUnavailable to its error handler.
func ExampleWithFailClosed() {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	defer rdb.Close()

	lim := bgredis.NewLimiter(rdb, "paid-api", redis_rate.PerMinute(600),
		bgredis.WithFailClosed(),
		bgredis.WithLogger(slog.New(slog.DiscardHandler)), // by default: one warning on slog.Default
	)
	p, err := bgpool.New(1, bgpool.WithLimiter(lim), bgpool.WithErrorHandler(func(_ context.Context, err error) {
		fmt.Println("unavailable:", errors.Is(err, bgredis.ErrUnavailable))
	}))
	if err != nil {
		log.Fatal(err)
	}
	_ = p.Submit(context.Background(), func(context.Context) error {
		return nil // call the paid API
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}

	st := lim.Stats()
	fmt.Println("dropped:", p.Stats().Dropped)
	fmt.Println("Redis down:", st.Down, "refused:", st.FallbackRefused)
	// Output:
	// unavailable: true
	// dropped: 1
	// Redis down: true refused: 1
}

// A handler that must answer at once asks Allow, which never waits for a
// token: here two requests a minute may call a partner's API, and the third
// is turned away with the time until the next token.
func ExampleLimiter_Allow() {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", ContextTimeoutEnabled: true})
	defer rdb.Close()

	key := "partner-api:" + strconv.FormatInt(time.Now().UnixNano(), 36)
	lim := bgredis.NewLimiter(rdb, key, redis_rate.PerMinute(2))
	for range 3 {
		ok, retryAfter := lim.Allow()
		fmt.Println("allowed:", ok, "retry within a minute:", retryAfter > 0 && retryAfter <= time.Minute)
	}
	// Output:
	// allowed: true retry within a minute: false
	// allowed: true retry within a minute: false
	// allowed: false retry within a minute: true
}

// A service checks the Limiter's Redis at startup, to fail at once on a
// wrong password or a Redis that is not there (here nothing listens on port
// 1) rather than run on the fallback. Stats, here after one decision,
// marshal to JSON for a health endpoint.
func ExampleLimiter_Check() {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", ContextTimeoutEnabled: true})
	defer rdb.Close()

	lim := bgredis.NewLimiter(rdb, "mail", redis_rate.PerSecond(100),
		bgredis.WithTimeout(50*time.Millisecond),
		bgredis.WithLogger(slog.New(slog.DiscardHandler)), // by default: one warning on slog.Default
	)
	if err := lim.Check(context.Background()); err != nil {
		fmt.Println(err)
	}

	lim.Allow() // decides by the fallback rate
	js, _ := json.Marshal(lim.Stats())
	fmt.Println(string(js))
	// Output:
	// bgredis: no connection to Redis within 50ms: dial tcp 127.0.0.1:1: connect: connection refused
	// {"down":true,"outages":1,"redis_errors":1,"fallback_allowed":1,"fallback_refused":0,"last_cause":"refused","last_error":"no connection to Redis within 50ms: dial tcp 127.0.0.1:1: connect: connection refused"}
}
