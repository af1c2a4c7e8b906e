package bgpool

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// A Handoff takes Jobs that the pool will not run and stores them where
// another process, or this one after a restart, runs them: a durable queue
// such as River on PostgreSQL (see the contrib/river module).
//
// Handoff stores every job and returns nil, or stores none and returns an
// error. A Handoff that can tell that some jobs can never be stored, because
// of the jobs themselves (args that do not marshal, say), may instead store
// all the others and return one *JobError for each job it refused, joined
// with errors.Join: the pool then counts the others HandedOff, and only the
// refused ones fall back. Handoff must return by the time ctx ends. The pool
// passes at most a few thousand jobs a call, and calls it from several
// goroutines at once, so it must be safe for concurrent use.
type Handoff interface {
	Handoff(ctx context.Context, jobs []JobArgs) error
}

// A JobError is a Handoff's refusal of one job, for a reason of the job's
// own: Index is its place in the slice that Handoff was given. A Handoff
// that returns only JobErrors (joined with errors.Join) has stored every
// other job; see Handoff.
type JobError struct {
	Index int
	Err   error
}

var _ error = (*JobError)(nil)

// Error names the job's index and the reason.
func (e *JobError) Error() string {
	return fmt.Sprintf("bgpool: hand-off refused job %d: %v", e.Index, e.Err)
}

// Unwrap returns the reason.
func (e *JobError) Unwrap() error { return e.Err }

// WithHandoff sets where the pool sends Jobs it will not run, so that they
// are not lost:
//
//   - Under the Spill policy, a Job that finds no room is handed off, alone,
//     on the submitting goroutine, instead of being dropped.
//   - When the time left to Shutdown's deadline comes down to what the
//     queued Jobs need, they are taken out of the queue and handed off, in
//     batches, on a goroutine of the pool's, instead of being abandoned at
//     the deadline. See "Jobs and durable hand-off" in the package
//     documentation.
//
// A Job handed off is counted HandedOff, batch by batch as the Handoff
// accepts it. If the Handoff returns an error (or panics), the Jobs of that
// call fall back to what would have happened without it, Dropped under
// Spill and Abandoned at Shutdown, and the error goes to the error handler
// (on the goroutine of the hand-off, never on Shutdown's); a *JobError
// makes only its job fall back. Plain tasks (closures) have nothing to hand
// off and are never passed: they are dropped or abandoned as before. Jobs
// started, and Jobs a worker holds while it waits for a rate-limit token,
// are not handed off: they are abandoned at Shutdown's deadline like other
// tasks. Shutdown hands off only with a deadline: a ctx without one that is
// cancelled abandons the queued Jobs, since nothing says how long the
// hand-off may take.
//
// A call whose answer does not come by the deadline may still have stored
// its Jobs (a commit whose reply was lost): Shutdown counts them Abandoned
// when the call returns, and the error handler's message says that the
// store may have them. To make such a Job safe to hand off twice, give it a
// unique key in the store (River's unique jobs, UniqueOpts, see the
// contrib/river module).
//
// The default is no Handoff. A nil h, also a typed nil, is an error.
func WithHandoff(h Handoff) Option {
	return optionFunc(func(o *options) error {
		if isNil(h) {
			return errors.New("bgpool: WithHandoff(nil): handoff must not be nil")
		}
		o.handoff = h
		return nil
	})
}

// handoffTimeout bounds Spill's hand-off, which runs on a submitter whose
// context may already be done (WithAfterResponse) and has no deadline of
// its own to keep.
const handoffTimeout = 5 * time.Second

// spill is Overflow.HandOff for it.
func (p *Pool) spill(it item) {
	q, ok := it.job()
	if !ok || p.opts.handoff == nil {
		p.settle(OutcomeDropped, report{wait: it.waiter()})
		return
	}
	hctx, cancel := context.WithTimeout(context.WithoutCancel(it.ctx), handoffTimeout)
	defer cancel()
	start := time.Now()
	err := p.callHandoff(hctx, []JobArgs{q.jobArgs()})
	p.handoffs.measured(1, time.Since(start))
	if err != nil {
		err = fmt.Errorf("bgpool: hand-off failed; job dropped: %w", err)
		p.handleError(it.ctx, err)
		p.settle(OutcomeDropped, report{err: err})
		return
	}
	p.settle(OutcomeHandedOff, report{})
}

// callHandoff calls the Handoff, turning a panic into an error.
func (p *Pool) callHandoff(ctx context.Context, jobs []JobArgs) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("bgpool: handoff panicked: %v", v)
		}
	}()
	return p.opts.handoff.Handoff(ctx, jobs)
}
