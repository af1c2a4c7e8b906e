package bgpool

import (
	"errors"
	"sync/atomic"
	"time"
)

// Stats is a snapshot of a pool's state and counters. Every task submitted
// ends in exactly one of Completed, Failed, Panicked, Dropped, Rejected,
// Abandoned and HandedOff, or is Queued or Running, and every snapshot
// satisfies
//
//	Submitted == Completed + Failed + Panicked + Dropped + Rejected + Abandoned + HandedOff + Queued + Running
//
// A Submit that waits for room (Block, BlockFor, Overflow.Wait) is counted
// in Waiting while it waits, and in Submitted once its task is admitted or
// refused.
type Stats struct {
	Workers   int // the cap on tasks running at once on workers: New's size, the last Tune, or where WithAdaptiveConcurrency has moved it
	Running   int // tasks executing, or handed to a worker and about to: on workers, and on submitters through CallerRuns (Overflow.Run)
	Queued    int // tasks in the queue, tasks a worker has taken that wait for a rate-limit token, and Jobs Shutdown is handing off
	QueueSize int // the queue's capacity
	Waiting   int // Submit calls not yet decided: nearly all of them waiting for room; not counted in Submitted until they are

	Submitted uint64 // calls to Submit and TrySubmit that were admitted or refused, and tasks Go kept for after a response (WithAfterResponse)
	Completed uint64 // tasks that returned nil
	Failed    uint64 // tasks that returned an error or called runtime.Goexit
	Panicked  uint64 // tasks that panicked
	Dropped   uint64 // tasks discarded by Drop, DropOldest or Spill (a closure, or a Job whose hand-off failed), by WithMaxQueueWait or WithQueueDelayTarget, by a failing Limiter, kept by a WithAfterResponse handler that panicked, or taken back by Job.Do before they started
	Rejected  uint64 // tasks refused with an error: ErrOverloaded, ErrClosed, or bad input
	Abandoned uint64 // tasks queued or running when Shutdown's deadline passed
	HandedOff uint64 // Jobs the pool's Handoff accepted: under Spill, or queued when Shutdown's drain ended (see WithHandoff)

	// Parts of Dropped, by reason, not part of the sum above: Dropped
	// minus both is what the policies, the limiter and Job.Do dropped.
	Expired uint64 // tasks dropped for waiting longer than WithMaxQueueWait
	Delayed uint64 // tasks dropped at the head of a standing queue by WithQueueDelayTarget

	// QueueDelay is how long the task a worker took last had waited in the
	// queue, the queue's delay now, to within an eighth of the target; zero
	// while the queue is empty. It is measured only with
	// WithQueueDelayTarget, and zero otherwise.
	QueueDelay time.Duration

	Shed uint64 // requests answered 503 by Middleware's WithShedding; requests, not tasks, so not part of the sum above
}

// Ended returns how many tasks reached an outcome: Completed + Failed +
// Panicked + Dropped + Rejected + Abandoned + HandedOff. Every snapshot
// satisfies Submitted == s.Ended() + Queued + Running.
func (s Stats) Ended() uint64 {
	return s.Completed + s.Failed + s.Panicked + s.Dropped + s.Rejected + s.Abandoned + s.HandedOff
}

// counters are a pool's outcome counters, each on its own cache line. The
// one that changes with nearly every task on the workers' side, Completed,
// is counted by each worker in its slot's state word (see slotState),
// which Stats sums, rather than in one shared counter moved between the
// cores on nearly every task. Only tasks completed on submitters
// (CallerRuns) use completed.
type counters struct {
	submitted padded // Submit calls, counted as they begin; see Stats
	completed padded // OutcomeCompleted on submitters (CallerRuns); workers count their own
	outcomes  [outcomeCount]padded
	shed      atomic.Uint64
}

type padded struct {
	atomic.Uint64
	_ [56]byte
}

// add counts one task in out. Expired and delayed tasks have counters of
// their own, which Stats adds to Dropped.
func (c *counters) add(out Outcome) {
	if out == OutcomeCompleted {
		c.completed.Add(1)
		return
	}
	c.outcomes[out].Add(1)
}

// addSubmitted counts one Submit call.
//
// One counter, not shards: a submitter that submits often keeps its line in
// its core's cache, and picking a shard at random cost more (a random
// number and a cache miss a call) than the sharing it saved.
func (c *counters) addSubmitted() { c.submitted.Add(1) }

// load reads the counter of out. Completed is summed by Pool.completed,
// over the workers' counters too.
func (c *counters) load(out Outcome) uint64 { return c.outcomes[out].Load() }

// loadSubmitted reads the number of Submit calls.
func (c *counters) loadSubmitted() uint64 { return c.submitted.Load() }

// outcomeDelayed is the outcome of a task that WithQueueDelayTarget dropped:
// counted on its own (Stats.Delayed, a part of Dropped), and reported to
// observers as OutcomeExpired.
const outcomeDelayed = OutcomeHandedOff + 1

// outcomeCount sizes counters.outcomes, indexed by Outcome.
const outcomeCount = int(outcomeDelayed) + 1

// report is what the observer is told of a task besides its outcome.
type report struct {
	wait    *awaited      // whoever waits for a task that ends without running, to tell; nil for none
	queued  bool          // the task was admitted (at is its admission time)
	started bool          // the task ran (ran is how long)
	at      time.Duration // admission time, on the pool's clock (see Pool.now)
	ran     time.Duration
	err     error
}

// The funnel. Every outcome is counted here, and nowhere else: settle for
// one task, settleItems for a batch taken from the queue, slotState.complete
// for a worker's own completions, and count for the tasks Shutdown abandons
// in the workers' hands, whose telling follows (tell) when their workers
// let go of them. Counting first and telling after keeps Stats' sum true
// at every instant: a waiter told that its task will not run finds it
// counted.

// slotState is a slot's state (slotIdle...) in its low byte and, in the
// rest, the number of tasks completed in the slot when it is a worker's:
// one word, so that a worker moves its task from running to idle and
// counts it in one atomic operation, on a cache line no other worker
// writes, and Stats reads both at once. Only the slot's owner adds to the
// count; Shutdown only moves the state.
type slotState struct{ v atomic.Uint64 }

const (
	slotStateBits = 0xff
	completedOne  = slotStateBits + 1 // one completed task in the count
)

// Load returns the state.
func (s *slotState) Load() uint32 { return uint32(s.v.Load() & slotStateBits) }

// CompareAndSwap moves the state from old to new, and reports whether it
// was old.
func (s *slotState) CompareAndSwap(old, new uint32) bool {
	v := s.v.Load()
	return uint32(v&slotStateBits) == old && s.v.CompareAndSwap(v, v&^slotStateBits|uint64(new))
}

// Store sets the state. Only the owner calls it, from a state no one else
// moves (idle, or abandoned after Shutdown's move).
func (s *slotState) Store(state uint32) {
	s.v.Store(s.v.Load()&^slotStateBits | uint64(state))
}

// complete moves the state from running to idle and counts one completed
// task, and reports false if the state was not running: Shutdown counted
// the task Abandoned.
func (s *slotState) complete() bool {
	v := s.v.Load()
	return v&slotStateBits == uint64(slotRunning) && s.v.CompareAndSwap(v, v&^slotStateBits+completedOne|uint64(slotIdle))
}

// completed returns the count of tasks completed in the slot.
func (s *slotState) completed() uint64 { return s.v.Load() / completedOne }

// settle is where a task reaches its outcome: it counts it, reports it to
// whoever waits for it and to the observer, and, once Shutdown has begun,
// lets Shutdown know when nothing is left. Every task passes through the
// funnel exactly once.
func (p *Pool) settle(out Outcome, r report) {
	p.stats.add(out)
	p.tell(out, r)
}

// count counts n tasks in out whose telling follows: the tasks Shutdown's
// deadline abandons in the workers' hands (see finish).
func (p *Pool) count(out Outcome, n int) {
	p.stats.outcomes[out].Add(uint64(n))
}

// tell reports a counted outcome to whoever waits for the task and to the
// observer, and, once Shutdown has begun, lets Shutdown know when nothing
// is left.
func (p *Pool) tell(out Outcome, r report) {
	// While the queue holds tasks the pool cannot have drained: look only
	// once it is empty, since checkDrained sums every worker's counter.
	if p.closing() && len(p.queue) == 0 {
		defer p.checkDrained() // deferred: the observer may call runtime.Goexit
	}
	if r.wait != nil {
		p.notifyUnrun(r.wait, out)
	}
	if len(p.opts.observers) > 0 {
		p.observe(out, r)
	}
}

// settleItems settles queued tasks that Shutdown took out of the queue
// (abandoned, or handed off): it counts them, tells their waiters, and
// reports them to the observer from a goroutine of its own, so that a slow
// observer cannot hold up Shutdown.
func (p *Pool) settleItems(out Outcome, its []item) {
	if len(its) == 0 {
		return
	}
	p.count(out, len(its))
	for _, it := range its {
		if c := it.waiter(); c != nil {
			p.notifyUnrun(c, out)
		}
	}
	if len(p.opts.observers) > 0 {
		go func() {
			for _, it := range its {
				p.observe(out, report{queued: true, at: it.at()})
			}
		}()
	}
	p.checkDrained()
}

// reject counts a task that was refused with err and returns err.
func (p *Pool) reject(err error) error {
	p.settle(OutcomeRejected, report{err: err})
	return err
}

// refuse counts a call that is refused with err before it reaches Submit
// (a Job's nil args, say), Submitted and Rejected, and returns err.
func (p *Pool) refuse(err error) error {
	p.stats.addSubmitted()
	return p.reject(err)
}

// notifyUnrun tells whoever waits for a task (Do, Group, Future) that it
// ended without running: dropped, expired or abandoned.
func (p *Pool) notifyUnrun(c *awaited, out Outcome) {
	err := ErrDropped
	if out == OutcomeAbandoned {
		err = p.abandonErr()
	}
	c.unrun(err)
}

// unsettled returns how many tasks have been submitted and not yet reached
// an outcome, counting submitters that have not yet decided (see Stats).
// Reading the outcomes before submitted keeps the difference from going
// negative: a task's outcome is counted after its submission.
func (p *Pool) unsettled() uint64 {
	settled := p.endedCount()
	return p.stats.loadSubmitted() - settled
}

// Stats returns a snapshot of the pool's state and counters that satisfies
// the sum in Stats' doc. It is safe to call at any time, also after
// Shutdown, and never waits on the pool. It takes one brief lock and looks
// at every worker, so its cost grows with Workers.
//
// A task between two places as the snapshot is taken (taken from the queue,
// or handed to a parked worker, and not yet started; or a Submit not yet
// decided or just let in from Waiting) is left out of Submitted for that
// snapshot, so Submitted can
// read a few lower than in the snapshot before. For counters that never go
// down, use the outcomes, as the contrib/prometheus collector does.
func (p *Pool) Stats() Stats {
	var s Stats
	var held, executing int
	var inQueue, calls, ended uint64
	// The counters are read in the reverse of the order in which a task
	// passes them (outcomes, then workers' slots, then the queue, then
	// Submit calls), so that no task is seen twice. A task that ends while
	// the snapshot is taken could be missed by every field; take it again
	// (a few times at most) when one did.
	for try := 0; ; try++ {
		s = Stats{
			Workers:   int(p.workers.Load()),
			QueueSize: cap(p.queue),
			Completed: p.completed(),
			Failed:    p.stats.load(OutcomeFailed),
			Panicked:  p.stats.load(OutcomePanicked),
			Expired:   p.stats.load(OutcomeExpired),
			Delayed:   p.stats.load(outcomeDelayed),
			Rejected:  p.stats.load(OutcomeRejected),
			Abandoned: p.stats.load(OutcomeAbandoned),
			HandedOff: p.stats.load(OutcomeHandedOff),
		}
		s.Dropped = p.stats.load(OutcomeDropped) + s.Expired + s.Delayed
		ended = s.Ended()
		// Slots before the queue: a task moves from the queue to a slot,
		// so read in this order it is seen at most once.
		held, executing = p.countSlots()
		inQueue = uint64(held) + uint64(len(p.queue)) + uint64(p.handingOff.Load())
		calls = p.stats.loadSubmitted()
		if try == 3 || p.endedCount() == ended {
			break
		}
	}
	s.Shed = p.stats.shed.Load()
	inflight := calls - ended
	queued := min(inQueue, inflight)
	if p.delays != nil && queued > 0 {
		s.QueueDelay = time.Duration(p.delays.last.Load())
	}
	running := min(inflight-queued, uint64(executing))
	// What is neither queued nor running on a worker or a caller is a
	// Submit still deciding, nearly always waiting for room: it is counted
	// Waiting, and in Submitted once it has decided.
	s.Queued, s.Running = int(queued), int(running)
	s.Waiting = int(inflight - queued - running)
	s.Submitted = ended + queued + running
	return s
}

// endedCount sums the outcome counters.
func (p *Pool) endedCount() uint64 {
	n := p.completed()
	for i := range p.stats.outcomes {
		if Outcome(i) != OutcomeCompleted {
			n += p.stats.outcomes[i].Load()
		}
	}
	return n
}

// completed sums the completed tasks: the workers' own counters and the
// pool's, for tasks completed on submitters. It takes p.mu briefly.
func (p *Pool) completed() uint64 {
	n := p.stats.completed.Load()
	p.mu.Lock()
	for _, w := range p.all {
		n += w.state.completed()
	}
	p.mu.Unlock()
	return n
}

// countSlots counts the tasks that workers hold while they wait for a
// token, and the tasks executing on workers and submitters.
func (p *Pool) countSlots() (held, executing int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, w := range p.all {
		switch w.state.Load() {
		case slotHolding:
			held++
		case slotRunning, slotStarting:
			executing++
		}
	}
	for s := range p.callers {
		if s.state.Load() == slotRunning {
			executing++
		}
	}
	return held, executing
}

// countShed counts a request that Middleware answered 503.
func (p *Pool) countShed() { p.stats.shed.Add(1) }

// countDiscarded counts tasks that were kept for after the response and
// discarded, never submitted, because the handler panicked: each is counted
// Submitted and Dropped, so that Stats' sum still adds up.
func (p *Pool) countDiscarded(tasks []item) {
	for _, it := range tasks {
		p.stats.addSubmitted()
		p.handleError(it.ctx, errKeptDiscarded)
		p.settle(OutcomeDropped, report{err: errKeptDiscarded})
	}
}

var errKeptDiscarded = errors.New("bgpool: task kept for after the response discarded: the handler panicked")
