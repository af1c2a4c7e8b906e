package bgpool

import (
	"context"
	"errors"

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
// Wait is all the pool calls, so it is all a Limiter needs, the shape of
// semaphore.Weighted's Acquire; a limiter may offer more to its own users
// (the contrib/redis Limiter's Allow, say).
//
// A Limiter must be safe for concurrent use: every worker calls it.
type Limiter interface {
	Wait(ctx context.Context) error
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
