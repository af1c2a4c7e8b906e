package bgredis

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// health is what a Limiter knows of Redis, and its counters. Every field is
// an atomic: decisions run on every worker at once, and none takes a lock.
// Times are monotonic nanoseconds from now().
type health struct {
	down       atomic.Bool
	since      atomic.Int64 // when the outage began; set before down
	nextProbe  atomic.Int64 // from when one decision may ask Redis again while down
	lastAnswer atomic.Int64 // when Redis last answered a call
	lastErr    atomic.Pointer[failure]
	logged     atomic.Pointer[failure] // the failure the log last gave for this outage; nil while up

	outages         atomic.Uint64
	redisErrors     atomic.Uint64
	fallbackAllowed atomic.Uint64
	fallbackRefused atomic.Uint64
}

// Stats is a snapshot of a Limiter's view of Redis and of its counters. The
// counters only grow. It marshals to JSON with snake_case names, as a health
// or metrics endpoint would serve it:
//
//	{"down":true,"outages":1,"redis_errors":3,"fallback_allowed":120,"fallback_refused":0,
//	 "last_cause":"auth","last_error":"Redis rejected the credentials: WRONGPASS ..."}
type Stats struct {
	// Down reports whether Redis is taken as down now, whatever the cause:
	// decisions use the fallback, and one per probe interval asks Redis
	// again.
	Down bool `json:"down"`
	// Outages counts the times Redis went from answering to not.
	Outages uint64 `json:"outages"`
	// RedisErrors counts Redis calls that failed or did not answer within the
	// timeout; a call that the caller's context ended is not one.
	RedisErrors uint64 `json:"redis_errors"`
	// FallbackAllowed counts tokens given without Redis, by WithFailOpen or
	// by the fallback rate.
	FallbackAllowed uint64 `json:"fallback_allowed"`
	// FallbackRefused counts refusals without Redis, by WithFailClosed: each
	// is a Wait that returned ErrUnavailable (a task the pool dropped) or an
	// Allow that reported false.
	FallbackRefused uint64 `json:"fallback_refused"`
	// LastCause is the cause of the last failed Redis call, "" if none has
	// failed. LastCause.IsConfig tells a configuration error.
	LastCause Cause `json:"last_cause,omitempty"`
	// LastError is the message of the last failed Redis call, "" if none
	// has failed: what happened, then the client's or the dial's error.
	// It is a string, not an error, so that Stats compares with == and
	// marshals to JSON; Wait's error (WithFailClosed) wraps the error
	// itself.
	LastError string `json:"last_error,omitempty"`
}

// Stats returns a snapshot of the Limiter's view of Redis and its counters.
// It is safe for concurrent use and does not block. The fields are read one
// by one, so a snapshot taken while decisions run may be a decision apart.
func (l *Limiter) Stats() Stats {
	st := Stats{
		Down:            l.down.Load(),
		Outages:         l.outages.Load(),
		RedisErrors:     l.redisErrors.Load(),
		FallbackAllowed: l.fallbackAllowed.Load(),
		FallbackRefused: l.fallbackRefused.Load(),
	}
	if f := l.lastErr.Load(); f != nil {
		st.LastCause, st.LastError = f.cause, f.Error()
	}
	return st
}

// epoch is the origin of now(): health's times are monotonic, so that a
// change of the wall clock moves no probe.
var epoch = time.Now()

// now returns the monotonic nanoseconds since epoch.
func now() int64 { return int64(time.Since(epoch)) }

// claimProbe reports whether the caller, while Redis is down, is the one
// decision of this probe interval that asks Redis; it starts the next
// interval if so.
func (l *Limiter) claimProbe() bool {
	t := now()
	next := l.nextProbe.Load()
	return t >= next && l.nextProbe.CompareAndSwap(next, t+int64(l.opts.probeInterval))
}

// failed counts the failure of a Redis call that began at began and, if
// Redis was up, takes it as down and logs that once, with the cause: at
// Error level for a configuration error, else at Warn. A call that began
// before Redis last answered changes nothing but the counters: the answer
// is the fresher news. (Without that rule a probe left waiting through a
// restart would report Redis down again just after another had found it
// back.) While down, a failure logs again only when it turns the outage
// into a configuration error or out of one (Redis restarted with a
// password, say): another change of cause is an outage going on.
func (l *Limiter) failed(f *failure, began int64) {
	l.redisErrors.Add(1)
	l.lastErr.Store(f)
	if began < l.lastAnswer.Load() {
		return
	}
	if l.down.Load() {
		l.causeChanged(f)
		return
	}
	t := now()
	l.nextProbe.Store(t + int64(l.opts.probeInterval))
	l.since.Store(t)
	if !l.down.CompareAndSwap(false, true) { // another decision got there first
		return
	}
	l.outages.Add(1)
	l.logged.Store(f)
	l.opts.logger.LogAttrs(context.Background(), f.cause.level(), "bgredis: "+f.cause.summary()+"; deciding without Redis until a probe succeeds",
		slog.String("key", l.key),
		slog.String("mode", l.opts.mode.String()),
		slog.Duration("probe_every", l.opts.probeInterval),
		slog.String("cause", string(f.cause)),
		slog.String("error", f.detail()),
	)
}

// causeChanged logs f, a failure while Redis is down, if it turns the
// outage into a configuration error or out of one, once per such change.
func (l *Limiter) causeChanged(f *failure) {
	prev := l.logged.Load()
	if prev == nil || prev.cause == f.cause || prev.cause.IsConfig() == f.cause.IsConfig() {
		return
	}
	if !l.logged.CompareAndSwap(prev, f) { // another decision logs the change
		return
	}
	l.opts.logger.LogAttrs(context.Background(), f.cause.level(), "bgredis: "+f.cause.summary()+"; still deciding without Redis",
		slog.String("key", l.key),
		slog.String("mode", l.opts.mode.String()),
		slog.String("cause", string(f.cause)),
		slog.String("was", string(prev.cause)),
		slog.String("error", f.detail()),
	)
}

// answered takes Redis as up after an answer and, if it was down, logs that
// once.
func (l *Limiter) answered() {
	t := now()
	l.lastAnswer.Store(t)
	if !l.down.Load() || !l.down.CompareAndSwap(true, false) {
		return
	}
	l.logged.Store(nil)
	l.opts.logger.LogAttrs(context.Background(), slog.LevelInfo, "bgredis: Redis answers again; limiting with it",
		slog.String("key", l.key),
		slog.Duration("down_for", time.Duration(t-l.since.Load())),
		slog.Uint64("redis_errors", l.redisErrors.Load()),
		slog.Uint64("fallback_allowed", l.fallbackAllowed.Load()),
		slog.Uint64("fallback_refused", l.fallbackRefused.Load()),
	)
}

// untilProbe is how long until Redis is asked again, at least minRetry.
func (l *Limiter) untilProbe() time.Duration {
	return max(time.Duration(l.nextProbe.Load()-now()), minRetry)
}

// lastFailure returns the last failed Redis call as an error, or nil.
func (l *Limiter) lastFailure() error {
	if f := l.lastErr.Load(); f != nil {
		return f
	}
	return nil
}
