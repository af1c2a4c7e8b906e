package bgpool

import (
	"context"
	"errors"
	"net/http"
	"time"
)

// JobArgs are the arguments of a Job: plain data that names its kind. It has
// the shape of River's river.JobArgs, so that one args type serves a Job run
// in the process and the same job run by River, and a Handoff can store it
// (typically as JSON) for another process to run.
type JobArgs interface {
	// Kind names the work, for example "welcome_mail". It must not change
	// between releases while stored jobs of that kind may exist.
	Kind() string
}

// A Job is a typed task: work that takes args of type T. Submitted to a pool
// it runs like any task, on a worker, under the pool's cap, policy, rate
// limit, task timeout, observer and shutdown. Unlike a closure, a Job that
// has not started can leave the process: with WithHandoff, the pool hands
// its args off (to a durable queue, see the contrib/river module) when the
// Spill policy cannot admit it, and when Shutdown's drain ends with it still
// queued.
//
// Make one Job per kind with NewJob, once, and submit it with many args. A
// Job is safe for concurrent use; its zero value is not usable.
type Job[T JobArgs] struct {
	work func(ctx context.Context, args T) error
}

// NewJob returns a Job that runs work. It panics if work is nil: that is a
// programming error that must not wait for the first submission to show.
func NewJob[T JobArgs](work func(ctx context.Context, args T) error) *Job[T] {
	if work == nil {
		panic("bgpool: NewJob: nil work")
	}
	return &Job[T]{work: work}
}

// Submit submits the job with args to p, as p.Submit would a task: it
// returns at once when a worker is free or the queue has room, and
// otherwise the pool's Policy decides (under Spill the job is handed off,
// see WithHandoff). The work runs with a context that carries ctx's values
// but not its cancellation. Submit returns Submit's errors, and an error for
// a nil p (nothing is counted) or nil args (counted Rejected).
//
// Submit allocates one record, which keeps args so that the pool can hand
// them off; a plain Pool.Submit allocates nothing. It is safe for
// concurrent use.
func (j *Job[T]) Submit(ctx context.Context, p *Pool, args T) error {
	if p == nil {
		return errors.New("bgpool: Job.Submit: nil pool")
	}
	if ctx == nil {
		return p.submit(ctx, nil, applyPolicy) // counted, and refused with Submit's error
	}
	if any(args) == nil {
		return p.refuse(errors.New("bgpool: Job.Submit: nil args"))
	}
	return p.submit(ctx, &jobRecord[T]{job: j, args: args}, applyPolicy)
}

// Go submits the job with args to the pool that Middleware attached to r's
// context, as Go does a task (WithAfterResponse included): its work sees r's
// context values, not its cancellation. It returns Go's errors.
func (j *Job[T]) Go(r *http.Request, args T) error {
	if r == nil {
		return errors.New("bgpool: Job.Go: nil request")
	}
	if any(args) == nil {
		if p, ok := FromContext(r.Context()); ok {
			return p.refuse(errors.New("bgpool: Job.Go: nil args"))
		}
		return ErrNoPool
	}
	return goRunner(r, &jobRecord[T]{job: j, args: args})
}

// Do runs the job with args inside p and waits for it, and returns the
// work's error, ErrDropped, ErrOverloaded, ErrClosed, or the error of
// Shutdown's deadline for a job that never started. Unlike Pool.Do, ctx
// bounds the job, not only the wait: when ctx ends before the work starts,
// Do takes the job back (it never runs; it is counted Dropped when a worker
// reaches it) and returns ctx's error; once the work has started, ctx's
// cancellation reaches the work's context (with its cause) and Do waits
// until the work has returned, however long that takes, Shutdown's deadline
// included. So Do returns only once the work has ended or will never start:
// a queue that runs the job again after Do returns (River retries it) never
// runs it twice at once.
//
// The task Do submits is a plain task, not a Job: the pool never hands it
// off (under Spill it is dropped, and Do returns ErrDropped), since the
// caller is waiting for it and decides what to do when the pool cannot run
// it. This is how the contrib/river module runs River's jobs inside a pool,
// snoozing them when the pool refuses. Do allocates Pool.Do's two records
// and a closure. It is safe for concurrent use.
func (j *Job[T]) Do(ctx context.Context, p *Pool, args T) error {
	if p == nil {
		return errors.New("bgpool: Job.Do: nil pool")
	}
	if any(args) == nil {
		return p.refuse(errors.New("bgpool: Job.Do: nil args"))
	}
	return p.do(ctx, func(ctx context.Context) error { return j.work(ctx, args) }, args.Kind(), true)
}

// jobRecord is a submitted Job, Job.Submit's one allocation: the runner of
// its item (see item), which carries the job and its args in the queue, so
// that the pool can hand the args off if the job has to leave the process.
type jobRecord[T JobArgs] struct {
	job  *Job[T]
	args T
	at   time.Duration // the admission time, when the pool stamps its tasks (see runner.stamp)
}

// A queuedJob is a Job's runner: its args can be handed off.
type queuedJob interface {
	runner
	jobArgs() JobArgs
}

func (r *jobRecord[T]) jobArgs() JobArgs { return r.args }

func (r *jobRecord[T]) run(ctx context.Context) error { return r.job.work(ctx, r.args) }

func (r *jobRecord[T]) stamp() *time.Duration { return &r.at }
