// Package bgriver joins a bgpool.Pool to River (github.com/riverqueue/river),
// a job queue on PostgreSQL, in both directions:
//
//   - NewHandoff is a bgpool.Handoff that inserts Jobs into River: with
//     bgpool.WithHandoff, the Jobs a pool cannot admit (bgpool.Spill) and
//     those still queued when Shutdown's drain ends are stored instead of
//     lost, and a River worker, in this process or another, runs them.
//   - AddWorker registers a bgpool.Job as River's worker for its kind, and
//     runs every River job of that kind inside a pool, under the pool's cap,
//     rate limit, task timeout, accounting and observer, and never twice at
//     once. When the pool turns it away for the moment, the job is snoozed
//     (a bounded number of times), not failed.
//
// One args type serves both: bgpool.JobArgs and river.JobArgs are both
// interface{ Kind() string }, and River stores args as JSON.
package bgriver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/riverqueue/river"

	"github.com/bgpool/bgpool"
)

// NewHandoff returns a bgpool.Handoff that inserts each batch of Jobs into
// River with c, each with opts (nil for River's defaults and each args
// type's InsertOpts). The Handoff honours its ctx. c needs no workers and
// need not be started: an insert-only client will do. It is safe for
// concurrent use.
//
// A batch goes into one InsertMany call: one transaction, all or none. A job
// that River would refuse for what it is does not take the others down: args
// whose JSON encoding fails are set aside before the insert, and if the
// insert still fails for a reason other than the database or ctx (an
// args type's InsertOpts that River rejects, a kind unknown to c's workers,
// a string that PostgreSQL's jsonb refuses), the batch is inserted again in
// one transaction, a savepoint per part, halving the parts until each
// refused job stands alone. The Handoff then stores every other job and
// returns one *bgpool.JobError per refused job (its index in jobs), joined
// with errors.Join. If every job is refused, or the database or ctx fails,
// it stores none and returns the error. The search costs one savepoint round
// trip per part tried, about 2·k·log2(n) for k refused jobs among n, and only
// when a job is refused.
//
// An error does not always mean that nothing was stored: if ctx ends while
// the commit is on its way, PostgreSQL may have committed the rows. Make the
// kinds that must not run twice unique (river.UniqueOpts) so that the pool's
// retry, or the caller's, inserts nothing new; see the README.
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
	// River encodes args with encoding/json; doing it once more here finds
	// the args it would refuse, at about a microsecond a job, before they
	// can sink the batch.
	var refused []error
	params := make([]river.InsertManyParams, 0, len(jobs))
	index := make([]int, 0, len(jobs)) // index[i] is params[i]'s place in jobs
	for i, args := range jobs {
		if err := encodable(args); err != nil {
			refused = append(refused, &bgpool.JobError{Index: i, Err: err})
			continue
		}
		params = append(params, river.InsertManyParams{Args: args, InsertOpts: h.opts})
		index = append(index, i)
	}
	if len(params) == 0 {
		return errors.Join(refused...)
	}
	_, err := h.client.InsertMany(ctx, params)
	if err == nil {
		return errors.Join(refused...)
	}
	if ctx.Err() != nil || !refusable(err) {
		return fmt.Errorf("bgriver: hand-off of %d jobs: %w", len(jobs), err)
	}
	bad, err := h.insertAround(ctx, params)
	if err != nil {
		return fmt.Errorf("bgriver: hand-off of %d jobs: %w", len(jobs), err)
	}
	for _, b := range bad {
		refused = append(refused, &bgpool.JobError{Index: index[b.index], Err: b.err})
	}
	slices.SortFunc(refused, func(a, b error) int {
		return a.(*bgpool.JobError).Index - b.(*bgpool.JobError).Index
	})
	return errors.Join(refused...)
}

// encodable reports why River could not encode args, if it could not.
func encodable(args bgpool.JobArgs) error {
	if args == nil {
		return errors.New("bgriver: nil args")
	}
	if _, err := json.Marshal(args); err != nil {
		return fmt.Errorf("bgriver: args of kind %q: %w", args.Kind(), err)
	}
	return nil
}

// refusable reports whether err, from an InsertMany, may be the refusal of
// some of its jobs rather than a failure of the database connection: River's
// own validation (a plain error), or PostgreSQL's refusal of a value (an
// error of class 22, data exception, such as jsonb's "unsupported Unicode
// escape sequence").
func refusable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return strings.HasPrefix(pgErr.Code, "22")
	}
	var netErr net.Error
	if errors.As(err, &netErr) || pgconn.SafeToRetry(err) || pgconn.Timeout(err) {
		return false
	}
	var connErr *pgconn.ConnectError
	return !errors.As(err, &connErr)
}

// A refusal is a job that River or PostgreSQL refused, by its place in the
// params given to insertAround.
type refusal struct {
	index int
	err   error
}

// insertAround inserts params in one transaction, a savepoint per part,
// splitting a part that fails in two until each refused job is alone. It
// returns the refused jobs, in order, once the rest are committed; or an
// error, with nothing stored, if every job is refused or the database fails.
func (h *handoff) insertAround(ctx context.Context, params []river.InsertManyParams) ([]refusal, error) {
	driver := h.client.Driver()
	execTx, err := driver.GetExecutor().Begin(ctx)
	if err != nil {
		return nil, err
	}
	tx := driver.UnwrapTx(execTx)
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op once committed

	var bad []refusal
	var insert func(lo, hi int) error
	insert = func(lo, hi int) error {
		sp, err := tx.Begin(ctx) // a savepoint
		if err != nil {
			return err
		}
		_, err = h.client.InsertManyTx(ctx, sp, params[lo:hi])
		if err == nil {
			return sp.Commit(ctx) // releases the savepoint
		}
		if rbErr := sp.Rollback(ctx); rbErr != nil {
			return errors.Join(err, rbErr)
		}
		if ctx.Err() != nil || !refusable(err) {
			return err
		}
		if hi-lo == 1 {
			bad = append(bad, refusal{index: lo, err: err})
			return nil
		}
		mid := lo + (hi-lo)/2
		if err := insert(lo, mid); err != nil {
			return err
		}
		return insert(mid, hi)
	}
	if err := insert(0, len(params)); err != nil {
		return nil, err
	}
	if len(bad) == len(params) {
		return nil, fmt.Errorf("every job refused, the first: %w", bad[0].err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, err
	}
	return bad, nil
}

// Snoozing a refused job: between snoozeMin and twice that, at random, so
// that jobs refused together do not all come back together.
const snoozeMin = time.Second

// MaxSnoozes is how many times, for each attempt, AddWorker's worker snoozes
// a job that its pool turns away for the moment (bgpool.ErrOverloaded or
// bgpool.ErrDropped): about 15 seconds of snoozes of one to two seconds.
// Past that the worker returns the refusal as the job's error, so that River
// uses an attempt and backs off by its retry policy, and the next attempt
// may snooze MaxSnoozes times again. The count is River's own: the
// "snoozes" key of the job's metadata, which River raises by one for each
// snooze and never resets, against MaxSnoozes times the job's attempt.
const MaxSnoozes = 10

// AddWorker registers j as River's worker for T's kind on w: River fetches
// the job and its worker runs j inside p with j.Do, and waits for it. The
// job thus runs under p's cap, rate limit, task timeout, observer and
// accounting, like every other task of p, and its work's error is River's
// (River retries it by its retry policy); a panic is the work's error too.
//
// When p turns the job away for the moment, because it is full
// (bgpool.ErrOverloaded, under Reject or when River's job timeout ends a
// Block wait) or dropped it (bgpool.ErrDropped: Drop, DropOldest, Spill,
// WithMaxQueueWait), the worker returns river.JobSnooze for one to two
// seconds: the job comes back without using up an attempt, up to MaxSnoozes
// times an attempt. Spill never hands such a job back to River: it is
// already there. When p is closed (bgpool.ErrClosed), no snooze helps: the
// worker returns the error, River uses an attempt and retries the job by
// its retry policy, on whichever client fetches it then. A job whose pool
// Shutdown abandoned returns that error, and River retries it.
//
// The worker's Work returns only once the job has ended in p, or has never
// started and never will, so River never runs it twice at once: when
// River cancels the job's context (its JobTimeout, Client.StopAndCancel)
// before the job starts in p, p never runs it and Work returns the context's
// error; once it has started, the work's context is cancelled too and Work
// waits for the work to return, and returns its result (bgpool.Job.Do). A
// work that honours its context thus ends the job early, and River retries
// it (a timeout uses an attempt; StopAndCancel's cancellation does not). A
// work that does not honour it keeps River's worker slot, and StopAndCancel,
// until it returns; River then records what it returned, a completion
// included. Keep River's RescueStuckJobsAfter above the longest such run:
// River takes a job still running then for one whose process died, and
// runs it again.
//
// Give the River queue at least as many workers (MaxWorkers) as p's size, or
// River, not p, limits the work.
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
	err := w.job.Do(context.WithValue(ctx, jobKey{}, job), w.pool, job.Args)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, bgpool.ErrClosed):
		return fmt.Errorf("bgriver: job %d not run: %w", job.ID, err)
	case errors.Is(err, bgpool.ErrOverloaded) || errors.Is(err, bgpool.ErrDropped):
		if n := snoozes(job.Metadata); n >= int64(MaxSnoozes)*int64(max(job.Attempt, 1)) {
			return fmt.Errorf("bgriver: job %d not run after %d snoozes: %w", job.ID, n, err)
		}
		return river.JobSnooze(snoozeMin + rand.N(snoozeMin))
	}
	return err
}

// snoozes returns the count of snoozes that River keeps in a job's metadata
// (the "snoozes" key), zero if there is none or it cannot be read.
func snoozes(metadata []byte) int64 {
	var m struct {
		Snoozes int64 `json:"snoozes"`
	}
	if len(metadata) == 0 || json.Unmarshal(metadata, &m) != nil {
		return 0
	}
	return m.Snoozes
}

// jobKey is the context key under which AddWorker's worker passes River's
// job to the work.
type jobKey struct{}

// JobFromContext returns the River job that AddWorker's worker is running,
// from the context of its work (the context that bgpool.Job's work
// receives), and false outside such a work or for another args type. With
// it, and river.ClientFromContext, a work can complete its job in its own
// transaction (river.JobCompleteTx), together with what it did, so that a
// rerun after a crash finds the record; see the README. It does not block
// and is safe for concurrent use.
func JobFromContext[T river.JobArgs](ctx context.Context) (*river.Job[T], bool) {
	job, ok := ctx.Value(jobKey{}).(*river.Job[T])
	return job, ok
}
