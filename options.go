package bgpool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"time"

	"golang.org/x/time/rate"
)

// An Option configures a Pool in New. Options are applied in order; a later
// option overrides an earlier one of the same kind. An invalid option makes
// New return an error.
type Option interface {
	apply(*options) error
}

type optionFunc func(*options) error

func (f optionFunc) apply(o *options) error { return f(o) }

// options holds a Pool's configuration. Its zero value of every field means
// the default; defaults are filled in by New via setDefaults.
type options struct {
	queueSize    int // -1 until WithQueueSize sets it
	policy       Policy
	limiter      Limiter // nil for none
	taskTimeout  time.Duration
	maxQueueWait time.Duration
	onError      func(context.Context, error)
	logger       *slog.Logger
	observers    []func(TaskEvent)
	handoff      Handoff // nil for none
	wrap         func(context.Context, TaskInfo, Task) error
	adaptMin     int // 0 without WithAdaptiveConcurrency
	adaptMax     int
	delayTarget  time.Duration
}

// setDefaults fills in every default in one place.
func (o *options) setDefaults(size int) {
	if o.queueSize < 0 {
		o.queueSize = min(size, MaxQueueSize)
	}
	if o.policy == nil {
		o.policy = Block
	}
}

// WithQueueSize sets how many tasks may wait for a worker. The default is
// the pool's size, or MaxQueueSize if that is smaller. Zero means hand-off
// only: a task is admitted only when a worker can take it at once. New
// allocates the queue at once (see MaxQueueSize). A negative n, or one
// above MaxQueueSize, is an error.
func WithQueueSize(n int) Option {
	return optionFunc(func(o *options) error {
		if n < 0 {
			return fmt.Errorf("bgpool: WithQueueSize(%d): queue size must not be negative", n)
		}
		o.queueSize = n
		return nil
	})
}

// WithPolicy sets what Submit does when the queue is full. The default is
// Block. A nil policy, also a typed nil such as a nil PolicyFunc or a nil
// pointer, is an error.
func WithPolicy(p Policy) Option {
	return optionFunc(func(o *options) error {
		if isNil(p) {
			return errors.New("bgpool: WithPolicy(nil): policy must not be nil")
		}
		o.policy = p
		return nil
	})
}

// isNil reports whether v is nil or an interface holding a nil pointer,
// func, map, slice, channel or interface: a value whose methods would panic
// later, which New refuses now.
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

// WithRateLimit caps how fast tasks start, with a token bucket that
// refills at limit tokens per second and holds at most burst tokens (see
// golang.org/x/time/rate). Tasks that arrive faster wait in the queue, and
// the policy handles the rest. Submit never waits for the limiter: each
// worker waits for the token of the task it took, so a slow limiter holds
// up a worker, not a submitter. Up to Workers such tasks can wait beyond
// QueueSize, all counted Queued. It is WithLimiter over a rate.Limiter.
//
// The default is no limit; rate.Inf also means no limit and costs nothing.
// A limit that is not positive, or a burst below 1 (which x/time/rate would
// read as "allow nothing"), is an error.
func WithRateLimit(limit rate.Limit, burst int) Option {
	return optionFunc(func(o *options) error {
		if limit != rate.Inf && !(limit > 0) {
			return fmt.Errorf("bgpool: WithRateLimit(%v, %d): limit must be positive or rate.Inf", limit, burst)
		}
		if burst < 1 {
			return fmt.Errorf("bgpool: WithRateLimit(%v, %d): burst must be at least 1", limit, burst)
		}
		o.limiter = nil
		if limit != rate.Inf {
			o.limiter = tokenBucket{rate.NewLimiter(limit, burst)}
		}
		return nil
	})
}

// WithTaskTimeout gives each task's context a deadline d after the task
// starts. The default, zero, means no deadline. A negative d is an error.
// A task that ignores its context is not stopped; it only sees ctx.Done.
// The tasks' contexts are allocated 32 at a time per worker, so a worker
// keeps up to 31 finished tasks' contexts (and the submitters' values in
// them) reachable until it has run as many more tasks or retires.
func WithTaskTimeout(d time.Duration) Option {
	return optionFunc(func(o *options) error {
		if d < 0 {
			return fmt.Errorf("bgpool: WithTaskTimeout(%v): duration must not be negative", d)
		}
		o.taskTimeout = d
		return nil
	})
}

// WithMaxQueueWait makes the pool discard, instead of run, a task that
// waited for longer than d between its Submit and the moment a worker took
// it: such a task is counted Dropped (OutcomeExpired for the observer). A
// Submit that waited for room under Block or BlockFor counts that wait too:
// the task is as stale as its request. The default, zero, means tasks wait
// as long as it takes. A negative d is an error.
func WithMaxQueueWait(d time.Duration) Option {
	return optionFunc(func(o *options) error {
		if d < 0 {
			return fmt.Errorf("bgpool: WithMaxQueueWait(%v): duration must not be negative", d)
		}
		o.maxQueueWait = d
		return nil
	})
}

// WithErrorHandler sets the function that receives every error a task
// returns, every panic as a *PanicError, and the error of a task kept for
// after the response (WithAfterResponse) that the pool did not admit. It is
// called on the worker that ran the task, with the task's context, before
// the task counts as finished; it may be called concurrently from several
// workers. A panic in fn is recovered and logged. The default logs each error
// at level Error on the pool's logger. A nil fn restores the default.
func WithErrorHandler(fn func(ctx context.Context, err error)) Option {
	return optionFunc(func(o *options) error {
		o.onError = fn
		return nil
	})
}

// WithLogger sets the logger of the default error handler and of the pool's
// own messages. The default, or a nil l, is slog.Default() at the time of
// logging.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(o *options) error {
		o.logger = l
		return nil
	})
}
