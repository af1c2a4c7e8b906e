package bgredis

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"

	"github.com/bgpool/bgpool"
)

// ErrUnavailable is the error of Wait while Redis is down and the Limiter
// fails closed (WithFailClosed). The pool drops the task, counts it Dropped
// and passes the error, which also wraps Redis' last error, to its error
// handler.
var ErrUnavailable = errors.New("bgredis: Redis is unavailable and the limiter fails closed")

// Limiter is a bgpool.Limiter whose tokens come from Redis, so that every
// process that uses the same key shares one limit. It runs the generic cell
// rate algorithm of github.com/go-redis/redis_rate: the key holds the time
// at which the next token is due, and each decision is one script call that
// moves it on by 1/rate if the token is due (or due within the burst).
// Most callers hand it to bgpool.WithLimiter, whose workers call Wait.
//
// When Redis does not answer in time, or answers with an error, the Limiter
// takes Redis as down and decides without it, in the mode chosen by the
// options: a token bucket in this process (WithFallbackRate, the default),
// every task allowed (WithFailOpen), or every task refused (WithFailClosed).
// While down, one decision per probe interval (WithProbeInterval) asks
// Redis again and the others use the fallback at once; the first answer
// brings Redis back. Probes ride on decisions, so a Limiter with nothing to
// decide finds Redis back at its next decision. Each change is logged once,
// with its cause, and Stats counts the errors and the decisions made
// without Redis. A configuration error (a wrong password, say) is handled
// the same way but logged at Error level; Check finds it at startup.
//
// No decision waits for Redis longer than the timeout (WithTimeout), and
// none outlives its context by more than that. go-redis ends a call at its
// context's deadline only if the client was built with
// ContextTimeoutEnabled; otherwise a read waits for ReadTimeout (3s by
// default) and is retried, whatever the context says. So with such a client
// the Limiter calls Redis on the caller's goroutine, and with any other on
// a goroutine of its own that the caller stops waiting for when the timeout
// or its context ends, which costs a goroutine and a wake-up per decision
// (see the README for figures). Set ContextTimeoutEnabled on the client.
//
// A Limiter is safe for concurrent use. Each decision while Redis is up
// costs one round trip.
type Limiter struct {
	rl    *redis_rate.Limiter
	key   string
	limit redis_rate.Limit
	opts  options
	local *rate.Limiter // the fallback token bucket; nil unless the mode is fallbackRate

	// inline is whether Redis calls run on the caller's goroutine: only
	// when the client stops a call at its context's deadline.
	inline bool
	// dials notes the client's dials, so that a call the timeout ends can
	// say why; nil for a client of another type.
	dials *dialWatch

	health
}

var _ bgpool.Limiter = (*Limiter)(nil)

// minRetry keeps Wait from spinning on a retry time that rounds to zero.
const minRetry = 100 * time.Microsecond

// NewLimiter returns a Limiter that allows limit's rate of tasks across all
// processes that use key on the Redis that rdb reaches (redis_rate stores it
// as "rate:"+key). It makes no call to Redis until the first decision. The
// result serves bgpool.WithLimiter, and its Allow and Stats serve callers
// of their own (a handler that must decide at once, a health endpoint).
//
// NewLimiter adds a hook to rdb that notes its dials, so that a call the
// timeout ends while the client is still dialling (go-redis retries a
// refused dial for some 400ms) reports the dial's error, "connection
// refused", rather than no answer: on a *redis.Client (NewClient,
// NewFailoverClient), on each node a *redis.ClusterClient makes from then
// on, on each shard of a *redis.Ring that is up or made later. The hook
// wraps dials only, never commands. Make a Limiter once per key, not per
// request: each adds a hook.
//
// NewLimiter returns no error, so bad input is a programming error that it
// reports at once with a panic whose message starts with "bgredis:": a nil
// rdb (also a typed nil), an empty key, a limit whose Rate, Burst or Period
// is not positive (redis_rate would then refuse every task, or divide by
// zero), a nil option or an invalid one.
func NewLimiter(rdb redis.UniversalClient, key string, limit redis_rate.Limit, opts ...Option) *Limiter {
	if isNil(rdb) {
		panic("bgredis: NewLimiter: the Redis client must not be nil")
	}
	if key == "" {
		panic("bgredis: NewLimiter: the key must not be empty")
	}
	if limit.Rate < 1 || limit.Burst < 1 || limit.Period <= 0 {
		panic(fmt.Sprintf("bgredis: NewLimiter: invalid limit %v: rate, burst and period must be positive", limit))
	}
	var o options
	for i, opt := range opts {
		if isNil(opt) {
			panic(fmt.Sprintf("bgredis: NewLimiter: option %d is nil", i))
		}
		if err := opt.apply(&o); err != nil {
			panic(err.Error())
		}
	}
	o.setDefaults(rate.Limit(float64(limit.Rate)/limit.Period.Seconds()), limit.Burst)
	l := &Limiter{
		rl:     redis_rate.NewLimiter(rdb),
		key:    key,
		limit:  limit,
		opts:   o,
		inline: endsAtDeadline(rdb),
	}
	l.dials = watchDials(rdb)
	if o.mode == fallbackRate {
		l.local = rate.NewLimiter(o.fallback, o.fallbackBurst)
	}
	return l
}

// Wait blocks until a task may start and returns nil, or returns ctx's error
// once ctx is done, or, while Redis is down and the Limiter fails closed, an
// error matching ErrUnavailable at once. Between tries it sleeps for the
// time after which Redis (or the fallback bucket) says a token is due, on a
// timer that ctx stops. Each try waits for Redis no longer than the
// timeout; a client with ContextTimeoutEnabled ends a call at ctx's
// deadline, but a ctx cancelled before its deadline ends the wait only when
// the call returns, within the timeout.
func (l *Limiter) Wait(ctx context.Context) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		ok, retryAfter, err := l.decide(ctx)
		if err != nil || ok {
			return err
		}
		timer := time.NewTimer(max(retryAfter, minRetry))
		select {
		case <-timer.C: // a token should be due now: ask again
		case <-ctx.Done(): // Shutdown's deadline, or the caller gave up
			timer.Stop()
			return ctx.Err()
		}
	}
}

// Allow takes a token if one is due and reports true; otherwise it reports
// false and how long until one should be (while Redis is down and the
// Limiter fails closed: until Redis is asked again). It blocks for one
// Redis round trip, the timeout at most.
func (l *Limiter) Allow() (ok bool, retryAfter time.Duration) {
	ok, retryAfter, _ = l.decide(context.Background())
	return ok, retryAfter
}

// Check asks Redis once, taking no token, and returns nil if Redis
// answered, or an error that names why not: "bgredis: Redis rejected the
// credentials: WRONGPASS ...", "bgredis: no connection to Redis within
// 250ms: dial tcp ...: connection refused". Call it at startup to fail fast
// on a configuration error; the Limiter itself never fails on one, it
// decides without Redis (see Limiter). Check blocks as a decision does, for
// the timeout at most, and returns ctx's error if ctx ends first. It runs
// the rate-limit script, so it also finds an ACL that denies it. It changes
// no counter of Stats and logs nothing. It is safe for concurrent use.
func (l *Limiter) Check(ctx context.Context) error {
	began := now()
	_, err := l.ask(ctx, 0)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return fmt.Errorf("bgredis: %w", l.explain(err, began))
}

// decide is one try of Wait and Allow: a token now (ok), or the time until
// one should be due. Its error is ctx's, or ErrUnavailable's when the
// Limiter fails closed while Redis is down.
func (l *Limiter) decide(ctx context.Context) (ok bool, retryAfter time.Duration, err error) {
	if l.down.Load() && !l.claimProbe() {
		return l.fallback()
	}
	began := now()
	res, err := l.ask(ctx, 1)
	if err != nil {
		if ctx.Err() != nil { // the caller's end, not Redis' failure
			return false, 0, ctx.Err()
		}
		l.failed(l.explain(err, began), began)
		return l.fallback()
	}
	l.answered()
	if res.Allowed > 0 {
		return true, 0, nil
	}
	return false, res.RetryAfter, nil
}

// answer is what a Redis call returns.
type answer struct {
	res *redis_rate.Result
	err error
}

// errNoAnswer is ask's error when the timeout (or ctx) ended the call
// before the client said why; explain turns it into what is known.
var errNoAnswer = errors.New("bgredis: no answer in time")

// ask takes n tokens from Redis (0 only asks), waiting for the answer no
// longer than the timeout or ctx allow. Unless the client ends a call at
// its context's deadline, the call runs on a goroutine of its own that the
// caller stops waiting for; that goroutine ends when the client gives up,
// and never blocks on done.
func (l *Limiter) ask(ctx context.Context, n int) (*redis_rate.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, l.opts.timeout)
	defer cancel()
	if l.inline {
		res, err := l.rl.AllowN(ctx, l.key, l.limit, n)
		// The client's i/o timeout may come a hair before ctx's deadline;
		// any other error (a refusal, WRONGPASS) is the cause as it is.
		if err != nil && pastDeadline(ctx) && classify(err) == CauseTimeout {
			return nil, errNoAnswer
		}
		return res, err
	}
	done := make(chan answer, 1)
	go func() {
		res, err := l.rl.AllowN(ctx, l.key, l.limit, n)
		done <- answer{res, err}
	}()
	select {
	case a := <-done: // Redis answered, or the client failed first
		return a.res, a.err
	case <-ctx.Done(): // the timeout, or the caller's ctx (decide tells which), ended the wait
		return nil, errNoAnswer
	}
}

// explain names the cause of ask's error for a call that began at began.
func (l *Limiter) explain(err error, began int64) *failure {
	if errors.Is(err, errNoAnswer) {
		return l.dials.noAnswer(l.opts.timeout, began)
	}
	return explained(err)
}

// pastDeadline reports whether ctx is done or its deadline has passed.
func pastDeadline(ctx context.Context) bool {
	deadline, _ := ctx.Deadline()
	return ctx.Err() != nil || !time.Now().Before(deadline)
}

// endsAtDeadline reports whether rdb ends a call when the call's context's
// deadline passes. go-redis does only with ContextTimeoutEnabled: otherwise
// its reads and writes wait for ReadTimeout and WriteTimeout (3s by
// default) and a failed call is retried, whatever the context says.
// Clients of other types (wrappers, say) are taken not to.
func endsAtDeadline(rdb redis.UniversalClient) bool {
	switch c := rdb.(type) {
	case *redis.Client:
		return c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled
	case *redis.Ring:
		return c.Options().ContextTimeoutEnabled
	}
	return false
}

// fallback decides without Redis, in the configured mode.
func (l *Limiter) fallback() (ok bool, retryAfter time.Duration, err error) {
	switch l.opts.mode {
	case failOpen:
		l.fallbackAllowed.Add(1)
		return true, 0, nil
	case failClosed:
		l.fallbackRefused.Add(1)
		return false, l.untilProbe(), fmt.Errorf("%w (key %q): %w", ErrUnavailable, l.key, l.lastFailure())
	}
	if !l.local.Allow() {
		r := l.local.Reserve() // only for the delay: Reserve allocates, Allow does not
		if d := r.Delay(); d > 0 {
			r.Cancel() // Wait sleeps and decides again: Redis may be back by then
			return false, d, nil
		}
	}
	l.fallbackAllowed.Add(1)
	return true, 0, nil
}

// isNil reports whether v is nil or an interface holding a nil pointer, map,
// slice, channel or function.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Pointer, reflect.Func, reflect.Map, reflect.Slice, reflect.Chan, reflect.Interface, reflect.UnsafePointer:
		return rv.IsNil()
	}
	return false
}
