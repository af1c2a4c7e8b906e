// Overflow policies.
//
// A pool admits a task when a worker is free or the queue has room. When
// neither holds, Submit hands the task to the pool's Policy, which settles it
// in one of these ways:
//
//   - Block waits for room, for as long as the submitter's context allows.
//     Choose it when every task matters and the submitter can afford to wait:
//     the queue then pushes back on the producer. It is the default.
//   - BlockFor(d) waits at most d. Choose it to bound how long a request
//     handler can be held up.
//   - Drop discards the new task and returns nil. Choose it for work that is
//     nice to have (cache warming, best-effort notifications) where the
//     submitter must never wait and need not know.
//   - Reject returns ErrOverloaded at once. Choose it when the submitter can
//     react: answer 503, retry elsewhere, or record the failure.
//   - DropOldest discards the oldest queued task and queues the new one.
//     Choose it when newer work supersedes older work (status updates,
//     refreshes), so the queue always holds the freshest tasks.
//   - CallerRuns runs the task on the submitter's goroutine. Choose it for
//     backpressure without losing work: a producer that runs tasks itself
//     cannot produce faster than the pool drains (Java's CallerRunsPolicy).
//     Such tasks run outside the pool's size cap.
//   - Spill hands a Job (see Job) to the pool's Handoff, a durable queue
//     such as River, and drops a plain task. Choose it for work that must
//     not be lost but need not run in this process (mail, webhooks,
//     exports): under a spike the overflow waits in the store, for this
//     process or another, instead of in memory.
//
// A Policy of your own decides with the same actions; see Overflow and the
// package example "block 10ms, then reject".
//
// Every outcome is counted in Stats: nothing overflows silently.

package bgpool

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// A Policy decides what Submit does with a task that the pool has no room
// for. Policies are called on the submitting goroutine with no lock held, and
// must be safe for concurrent use.
//
// Overflow must settle the task by calling exactly one of o's actions (Wait
// that succeeds, Drop, Reject, DropOldest, Run or HandOff) and return what Submit
// should return. A task left unsettled is counted Rejected, and Submit
// returns Overflow's error, or ErrOverloaded if that is nil.
type Policy interface {
	Overflow(ctx context.Context, o *Overflow) error
}

// PolicyFunc adapts an ordinary function to the Policy interface.
type PolicyFunc func(ctx context.Context, o *Overflow) error

// Overflow calls f(ctx, o).
func (f PolicyFunc) Overflow(ctx context.Context, o *Overflow) error { return f(ctx, o) }

// The built-in policies. Block is the default.
var (
	// Block waits until the task is admitted or ctx ends. When ctx ends
	// first, Submit returns an error that matches both ErrOverloaded and
	// ctx.Err(); when Shutdown begins first, ErrClosed.
	Block Policy = blockPolicy{}

	// Drop discards the task, counts it Dropped, and makes Submit return nil.
	Drop Policy = PolicyFunc(func(_ context.Context, o *Overflow) error {
		return o.Drop()
	})

	// Reject makes Submit return ErrOverloaded at once and counts the task
	// Rejected.
	Reject Policy = PolicyFunc(func(_ context.Context, o *Overflow) error {
		return o.Reject()
	})

	// DropOldest discards the oldest queued task, counting it Dropped, and
	// queues the new one. With no task in the queue (WithQueueSize(0)) the
	// new task is the oldest and is dropped.
	DropOldest Policy = PolicyFunc(func(_ context.Context, o *Overflow) error {
		return o.DropOldest()
	})

	// CallerRuns runs the task on the submitting goroutine, so Submit blocks
	// for as long as the task runs and returns nil. The task gets the same
	// context, timeout, panic recovery, error handler and counting as a task
	// run by a worker, and Shutdown waits for it, but it does not count
	// towards the size cap (see Overflow.Run).
	CallerRuns Policy = PolicyFunc(func(_ context.Context, o *Overflow) error {
		return o.Run()
	})

	// Spill hands off a Job that finds no room to the pool's Handoff (see
	// WithHandoff), counting it HandedOff, and drops a plain task (a
	// closure), counting it Dropped, as Drop does: Submit returns nil either
	// way. A failed hand-off drops the Job and passes the error to the
	// error handler. The hand-off runs on the submitting goroutine, which
	// it holds for the length of one Handoff call: with the submitter's
	// context values, not its cancellation, and a timeout of 5 seconds, so
	// that a Job the pool could not take reaches the store even if the
	// request that submitted it has ended. New refuses Spill without
	// WithHandoff. After Shutdown has begun, Submit refuses a Job with
	// ErrClosed before any policy is asked, as it does every task.
	Spill Policy = spillPolicy{}
)

// spillPolicy is Spill's type, so that New can recognise it (see isSpill).
type spillPolicy struct{}

func (spillPolicy) Overflow(_ context.Context, o *Overflow) error { return o.HandOff() }

// isSpill reports whether pol is Spill.
func isSpill(pol Policy) bool {
	_, ok := pol.(spillPolicy)
	return ok
}

// blockPolicy is Block's type. A type of its own lets New recognise Block
// (isBlock) and let Submit wait without going through the Policy interface:
// an Overflow passed to an interface method escapes to the heap, which would
// cost an allocation per blocked Submit.
type blockPolicy struct{}

func (blockPolicy) Overflow(ctx context.Context, o *Overflow) error { return o.Wait(ctx) }

// isBlock reports whether pol is Block.
func isBlock(pol Policy) bool {
	_, ok := pol.(blockPolicy)
	return ok
}

// BlockFor returns a Policy that waits like Block, but at most d. When d
// passes first, Submit returns an error that matches ErrOverloaded and
// context.DeadlineExceeded. A d of zero or less waits not at all: the task is
// rejected at once, like Reject.
func BlockFor(d time.Duration) Policy {
	return PolicyFunc(func(ctx context.Context, o *Overflow) error {
		ctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		return o.Wait(ctx)
	})
}

// errSettled is returned by an Overflow action called after the task was
// already settled.
var errSettled = errors.New("bgpool: overflow already settled")

// Overflow is a task that found no room, handed to a Policy. Its methods are
// the ways to settle it; each counts the task in Stats. After one action has
// settled the task, the others do nothing and return an error. An Overflow
// is valid only during the Policy call that received it, and its methods
// must be called from that call's goroutine.
type Overflow struct {
	pool    *Pool
	it      item
	settled bool
}

// Wait blocks until the task is admitted to the queue or a worker, in FIFO
// order with other waiting submitters, and returns nil; or until ctx ends,
// and returns an error matching both ErrOverloaded and ctx.Err(); or until
// Shutdown begins, and returns ErrClosed. A nil ctx is an error. An
// unsuccessful Wait leaves the task unsettled, so the policy may still Drop,
// Reject or Run it.
func (o *Overflow) Wait(ctx context.Context) error {
	if o.settled {
		return errSettled
	}
	it := o.it
	if o.pool.stamp {
		it.setAt(o.pool.now())
	}
	if ctx != nil && !o.pool.closing() && o.pool.admitByStarting(it) { // a worker may have retired since the pool looked
		o.settled = true
		return nil
	}
	err := o.pool.wait(ctx, it)
	o.settled = err == nil
	return err
}

// Drop discards the task, counts it Dropped and returns nil.
func (o *Overflow) Drop() error {
	if o.settled {
		return errSettled
	}
	o.settled = true
	o.pool.settle(OutcomeDropped, report{wait: o.it.waiter()})
	return nil
}

// Reject counts the task Rejected and returns ErrOverloaded.
func (o *Overflow) Reject() error {
	if o.settled {
		return errSettled
	}
	o.settled = true
	return o.pool.reject(ErrOverloaded)
}

// DropOldest discards the oldest queued task, counting it Dropped, queues
// this one, and returns nil. If room appeared meanwhile nothing is dropped;
// if the queue holds nothing to drop, this task is dropped instead. After
// Shutdown has begun it returns ErrClosed and counts the task Rejected.
func (o *Overflow) DropOldest() error {
	if o.settled {
		return errSettled
	}
	o.settled = true
	return o.pool.dropOldest(o.it)
}

// Run runs the task on the calling goroutine, blocking until it returns,
// with the pool's task context, timeout, panic recovery, error handler and
// counting. The task counts as Running, and Shutdown waits for it and, at
// its deadline, abandons it like a task on a worker; it does not count
// towards the size cap and does not wait for a rate-limit token. Run
// returns nil: the task's own error goes to the error handler, as for a
// task run by a worker. After Shutdown has begun, Run does not run the
// task: it counts it Rejected and returns ErrClosed.
func (o *Overflow) Run() error {
	if o.settled {
		return errSettled
	}
	o.settled = true
	return o.pool.runHere(o.it)
}

// HandOff passes the task to the pool's Handoff if it is a Job that has not
// started and the pool has a Handoff (WithHandoff), counting it HandedOff;
// otherwise, or if the hand-off fails, it drops the task, counting it
// Dropped, and a hand-off's error goes to the error handler. It returns nil.
// It blocks for the length of the Handoff call, 5 seconds at most (see
// Spill).
func (o *Overflow) HandOff() error {
	if o.settled {
		return errSettled
	}
	o.settled = true
	o.pool.spill(o.it)
	return nil
}

// The actions, as the pool carries them out.

// wait is Overflow.Wait: it blocks until the task is admitted, in FIFO order
// with other waiting submitters (the channel keeps its blocked senders in
// order), or until ctx ends or Shutdown begins. On failure the task is not
// counted: the caller settles it.
func (p *Pool) wait(ctx context.Context, it item) error {
	if ctx == nil {
		return errors.New("bgpool: Overflow.Wait: nil context")
	}
	if p.closing() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return overloaded(err)
	}
	p.waiting.Add(1)
	defer p.waiting.Add(-1)
	var spare chan struct{} // nil: never ready
	if cap(p.queue) == 0 {
		spare = p.spare
	}
	for {
		// A queue without a buffer admits a task only into a worker's
		// hands: look for a parked one after counting this call in waiting,
		// which a parking worker reads (see park.go). Workers that fell
		// asleep together left one signal between them: pass it on to the
		// next waiter while one is left.
		if spare != nil && p.handOver(it) {
			if p.waiting.Load() > 1 && p.parked.Load() > 0 {
				p.signalSpare()
			}
			return nil
		}
		select {
		case p.queue <- it: // admitted
			p.admitted()
			return nil
		case <-spare: // a worker parked: look again
		case <-ctx.Done(): // the submitter stopped waiting
			return overloaded(ctx.Err())
		case <-p.closingShard(): // Shutdown began: nothing more is admitted
			return ErrClosed
		}
	}
}

// maxDropOldestTries bounds how many queued tasks one DropOldest may drop
// while later submitters keep taking the room it makes, each of whose
// tasks has displaced one then; past it the new task is dropped.
const maxDropOldestTries = 1000

// dropOldest is Overflow.DropOldest. It drops the oldest queued task to
// make room for it, and if a submitter that came later took that room,
// the next oldest, so that the new task is dropped only when the queue has
// nothing older to drop (WithQueueSize(0)). p.mu keeps DropOldest callers
// in line with each other and with Shutdown: once the pool is closed, it
// takes nothing out of the queue that the drain would run.
func (p *Pool) dropOldest(it item) error {
	if p.closing() {
		return p.reject(ErrClosed)
	}
	if p.stamp {
		it.setAt(p.now())
	}
	if p.enqueue(it) || p.admitByStarting(it) { // room appeared: nothing is dropped
		return nil
	}
	var dropped []item
	queued := false
	p.mu.Lock()
	if p.closing() {
		p.mu.Unlock()
		return p.reject(ErrClosed)
	}
	for range maxDropOldestTries {
		old, ok := p.takeTask()
		if !ok { // nothing older to drop: this task is the oldest
			break
		}
		dropped = append(dropped, old)
		select {
		case p.queue <- it:
			queued = true
		default: // a submitter that came later took the room: drop the next oldest
			continue
		}
		break
	}
	p.mu.Unlock()
	for _, old := range dropped {
		p.settle(OutcomeDropped, report{wait: old.waiter(), queued: true, at: old.at()})
	}
	if !queued {
		p.settle(OutcomeDropped, report{wait: it.waiter()})
		return nil
	}
	p.admitted()
	return nil
}

// callerSlots recycles the slots of tasks run on submitters.
var callerSlots = sync.Pool{New: func() any { return new(slot) }}

// runHere is Overflow.Run: it runs the task on the calling goroutine as a
// running task of the pool's, which Shutdown waits for and, at its
// deadline, abandons.
func (p *Pool) runHere(it item) error {
	s := callerSlots.Get().(*slot)
	p.mu.Lock()
	if p.closing() {
		p.mu.Unlock()
		callerSlots.Put(s)
		return p.reject(ErrClosed)
	}
	s.state.Store(slotRunning)
	p.callers[s] = struct{}{}
	p.mu.Unlock()

	finished := false
	defer func() {
		p.mu.Lock()
		delete(p.callers, s)
		p.mu.Unlock()
		if !finished { // the task called runtime.Goexit
			p.finish(s, it, OutcomeFailed, report{started: true, err: errGoexit})
			return
		}
		callerSlots.Put(s)
	}()
	out, ran, err := p.execute(s, it, false)
	p.finish(s, it, out, report{started: true, ran: ran, err: err})
	finished = true
	return nil
}

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
