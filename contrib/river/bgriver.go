// Package bgriver joins a bgpool.Pool to River (github.com/riverqueue/river),
// a job queue on PostgreSQL, in both directions:
//
//   - NewHandoff is a bgpool.Handoff that inserts Jobs into River: with
//     bgpool.WithHandoff, the Jobs a pool cannot admit (bgpool.Spill) and
//     those still queued when Shutdown's drain ends are stored instead of
//     lost, and a River worker, in this process or another, runs them.
//   - AddWorker registers a bgpool.Job as River's worker for its kind, and
//     runs every River job of that kind inside a pool, under the pool's cap,
//     rate limit, task timeout, accounting and observer. When the pool
//     refuses it, the job is snoozed, not failed.
//
// One args type serves both: bgpool.JobArgs and river.JobArgs are both
// interface{ Kind() string }, and River stores args as JSON.
package bgriver

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/bgpool/bgpool"
)

// NewHandoff returns a bgpool.Handoff that inserts each batch of Jobs into
// River with c, in one InsertMany call (one transaction: all or none), each
// with opts (nil for River's defaults and each args type's InsertOpts). The
// Handoff honours its ctx, as InsertMany does. c needs no workers and need
// not be started: an insert-only client will do. If c has workers, each
// kind handed off must be registered with them, or InsertMany refuses the
// batch (see River's SkipUnknownJobCheck). It is safe for concurrent use.
//
// NewHandoff panics if c is nil: that is a programming error that must not
// wait for the first hand-off to show.
func NewHandoff(c *river.Client[pgx.Tx], opts *river.InsertOpts) bgpool.Handoff {
	if c == nil {
		panic("bgriver: NewHandoff: nil client")
	}
	return &handoff{client: c, opts: opts}
}

type handoff struct {
	client *river.Client[pgx.Tx]
	opts   *river.InsertOpts
}

func (h *handoff) Handoff(ctx context.Context, jobs []bgpool.JobArgs) error {
	params := make([]river.InsertManyParams, len(jobs))
	for i, args := range jobs {
		params[i] = river.InsertManyParams{Args: args, InsertOpts: h.opts}
	}
	_, err := h.client.InsertMany(ctx, params)
	return err
}

// Snoozing a refused job: between snoozeMin and twice that, at random, so
// that jobs refused together do not all come back together.
const snoozeMin = time.Second

// AddWorker registers j as River's worker for T's kind on w: River fetches
// the job and its worker runs j inside p with j.Do, and waits for it. The
// job thus runs under p's cap, rate limit, task timeout, observer and
// accounting, like every other task of p, and its work's error is River's
// (River retries it by its retry policy); a panic is the work's error too.
//
// When p refuses the job, because it is full (bgpool.ErrOverloaded, under
// Reject or when River's job timeout ends a Block wait), dropped it
// (bgpool.ErrDropped: Drop, DropOldest, Spill, WithMaxQueueWait) or is
// closed (bgpool.ErrClosed), the worker returns river.JobSnooze for one to
// two seconds: the job comes back without using up an attempt. Spill never
// hands such a job back to River: it is already there. A job whose pool
// Shutdown abandoned returns that error, and River retries it.
//
// Give the River queue at least as many workers (MaxWorkers) as p's size, or
// River, not p, limits the work. River's JobTimeout bounds the wait for p:
// when it passes while the job is queued or running in p, River counts a
// timeout and retries the job, and the task, already in p, still runs.
//
// AddWorker panics, like river.AddWorker, if T's kind is already
// registered, and if w, p or j is nil.
func AddWorker[T river.JobArgs](w *river.Workers, p *bgpool.Pool, j *bgpool.Job[T]) {
	if w == nil || p == nil || j == nil {
		panic("bgriver: AddWorker: nil workers, pool or job")
	}
	river.AddWorker(w, &worker[T]{pool: p, job: j})
}

type worker[T river.JobArgs] struct {
	river.WorkerDefaults[T]
	pool *bgpool.Pool
	job  *bgpool.Job[T]
}

func (w *worker[T]) Work(ctx context.Context, job *river.Job[T]) error {
	err := w.job.Do(ctx, w.pool, job.Args)
	if refused(err) {
		return river.JobSnooze(snoozeMin + rand.N(snoozeMin))
	}
	return err
}

// refused reports whether err says that the pool did not run the task.
func refused(err error) bool {
	return errors.Is(err, bgpool.ErrOverloaded) || errors.Is(err, bgpool.ErrDropped) || errors.Is(err, bgpool.ErrClosed)
}
