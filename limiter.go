package bgpool

import (
	"context"
	"errors"
	"time"

	"golang.org/x/time/rate"
)

// A Limiter decides when tasks may start: the seam between the pool and a
// rate limiter, in this process (WithRateLimit, over golang.org/x/time/rate)
// or shared by every replica of a service (a limiter on Redis, say).
//
// A worker that has taken a task from the queue calls Wait before the task
// starts, with a context that Shutdown cancels when its deadline passes;
// meanwhile the task counts as Queued. Wait may be slow (a network round
// trip): the pool never calls it with a lock held, and Submit never waits
// for it. Wait returns nil when the task may start, or an error: the
// context's, or the limiter's own failure, after which the pool drops the
// task, counts it Dropped and passes the error to the error handler.
// Allow is the non-waiting twin, for code that must decide at once (a
// handler shedding load before it submits): it takes a token if one is
// there and otherwise says how long until one should be.
//
// A Limiter must be safe for concurrent use: every worker calls it.
type Limiter interface {
	Wait(ctx context.Context) error
	Allow() (ok bool, retryAfter time.Duration)
}

// WithLimiter makes every task wait for l before it starts; see Limiter.
// The default is no limiter. A nil l (also a typed nil) is an error. It
// replaces an earlier WithRateLimit, and a later WithRateLimit replaces it.
func WithLimiter(l Limiter) Option {
	return optionFunc(func(o *options) error {
		if isNil(l) {
			return errors.New("bgpool: WithLimiter(nil): limiter must not be nil")
		}
		o.limiter = l
		return nil
	})
}

// tokenBucket is the Limiter of WithRateLimit.
type tokenBucket struct {
	lim *rate.Limiter
}

func (t tokenBucket) Wait(ctx context.Context) error { return t.lim.Wait(ctx) }

func (t tokenBucket) Allow() (bool, time.Duration) {
	r := t.lim.Reserve()
	if d := r.Delay(); d > 0 {
		r.Cancel()
		return false, d
	}
	return true, 0
}
