package bgredis

import (
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/time/rate"
)

// Defaults of the options.
const (
	// DefaultTimeout bounds each Redis call: a rate-limit check is one round
	// trip, well under a millisecond on a LAN, so 250ms rides out a slow dial
	// or a GC pause but keeps a worker from waiting long on a Redis that has
	// stopped answering.
	DefaultTimeout = 250 * time.Millisecond

	// DefaultProbeInterval is how often, while Redis is down, one decision
	// tries Redis again instead of the fallback.
	DefaultProbeInterval = time.Second
)

// mode is what a Limiter does while Redis is unreachable or answers with an
// error; the options WithFallbackRate (the default), WithFailOpen and
// WithFailClosed choose it.
type mode uint8

const (
	fallbackRate mode = iota
	failOpen
	failClosed
)

// String returns the mode's name, as the logs give it.
func (m mode) String() string {
	switch m {
	case fallbackRate:
		return "fallback-rate"
	case failOpen:
		return "fail-open"
	case failClosed:
		return "fail-closed"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// An Option configures a Limiter in NewLimiter. Options are applied in
// order; a later option overrides an earlier one of the same kind (the three
// modes are one kind). An invalid option makes NewLimiter panic, since it
// returns no error.
type Option interface {
	apply(*options) error
}

type optionFunc func(*options) error

func (f optionFunc) apply(o *options) error { return f(o) }

// options holds a Limiter's configuration. The zero value of every field
// means the default; NewLimiter fills them in via setDefaults.
type options struct {
	mode          mode
	fallback      rate.Limit // 0 until WithFallbackRate sets it
	fallbackBurst int
	timeout       time.Duration
	probeInterval time.Duration
	logger        *slog.Logger
}

// setDefaults fills in every default in one place. perSecond and burst are
// the Redis limit's, which the fallback rate copies unless told otherwise.
func (o *options) setDefaults(perSecond rate.Limit, burst int) {
	if o.fallback == 0 {
		o.fallback, o.fallbackBurst = perSecond, burst
	}
	if o.timeout == 0 {
		o.timeout = DefaultTimeout
	}
	if o.probeInterval == 0 {
		o.probeInterval = DefaultProbeInterval
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
}

// WithFailOpen makes the Limiter let every task start while Redis is down.
// Choose it when an outage of the limit is cheaper than any delay: the
// downstream copes with bursts, and the limit is a courtesy.
func WithFailOpen() Option {
	return optionFunc(func(o *options) error {
		o.mode = failOpen
		return nil
	})
}

// WithFailClosed makes the Limiter refuse every task while Redis is down:
// Wait returns an error matching ErrUnavailable at once, so the pool drops
// the task, counts it Dropped and reports the error, and Allow reports false
// with the time until the next probe of Redis. Choose it when exceeding the
// limit is worse than losing the work (a paid API billed per call beyond a
// quota), or with a pool whose dropped tasks are retried elsewhere.
func WithFailClosed() Option {
	return optionFunc(func(o *options) error {
		o.mode = failClosed
		return nil
	})
}

// WithFallbackRate makes the Limiter decide with a token bucket in this
// process, refilled at limit tokens per second and holding at most burst,
// while Redis is down. This is the default mode, with the Redis limit's own
// rate and burst: each process then allows the whole limit on its own, so N
// replicas allow up to N times it; give limit/N to stay under the shared
// limit. rate.Inf (any burst) is the same as WithFailOpen. A limit that is
// not positive, or a burst below 1 with a finite limit, is invalid.
func WithFallbackRate(limit rate.Limit, burst int) Option {
	return optionFunc(func(o *options) error {
		if !(limit > 0) || (limit != rate.Inf && burst < 1) {
			return fmt.Errorf("bgredis: WithFallbackRate(%v, %d): the limit must be positive and the burst at least 1", limit, burst)
		}
		o.mode, o.fallback, o.fallbackBurst = fallbackRate, limit, burst
		return nil
	})
}

// WithTimeout bounds each Redis call; the caller's context bounds it too. A
// call that times out counts as a Redis error: the Limiter falls back. The
// default is DefaultTimeout (250ms); zero means the default, and a negative
// d is invalid. The bound holds whatever the client's own timeouts are (see
// Limiter).
func WithTimeout(d time.Duration) Option {
	return optionFunc(func(o *options) error {
		if d < 0 {
			return fmt.Errorf("bgredis: WithTimeout(%v): the timeout must not be negative", d)
		}
		o.timeout = d
		return nil
	})
}

// WithProbeInterval sets how often, while Redis is down, one decision asks
// Redis again; all others use the fallback at once, so an outage costs no
// round trips or timeouts beyond one per interval. The default is
// DefaultProbeInterval (1s); zero means the default, and a negative d is
// invalid.
func WithProbeInterval(d time.Duration) Option {
	return optionFunc(func(o *options) error {
		if d < 0 {
			return fmt.Errorf("bgredis: WithProbeInterval(%v): the interval must not be negative", d)
		}
		o.probeInterval = d
		return nil
	})
}

// WithLogger sets the logger of state changes: a warning when Redis becomes
// unreachable, and a message when it answers again, each once per change,
// never per decision. The default, and what nil means, is slog.Default();
// slog.New(slog.DiscardHandler) silences it.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) error {
		o.logger = l
		return nil
	})
}
