package bgpool

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"sync/atomic"
	"time"
)

// A slot holds the state of the task that a worker loop, or a submitter
// running a task through CallerRuns, has in hand. Its owner moves it from
// idle to holding or running and back; Shutdown moves holding and running
// to abandoned when its deadline passes. Whoever moves a task out of
// holding or running counts it, so every task is counted once.
type slot struct {
	state slotState
	// counts tells whether the tasks completed in this slot are counted in
	// its state word: a worker's are (see slotState); those of a CallerRuns
	// slot, which is recycled, go to the pool's counter.
	counts bool
	// held is the task the owner holds while it waits for a rate-limit
	// token, for taskExited: a limiter that calls runtime.Goexit ends the
	// goroutine before the task starts.
	held item
	// waiter is the record of the last task in this slot that someone
	// waits for (Do, Group, Future), stored before the task is claimed:
	// Shutdown's deadline ends it, so that its waiter returns then even if
	// the task never does. It may be stale, an awaited that has ended:
	// ending one again does nothing.
	waiter atomic.Pointer[awaited]
	// sampling counts down the tasks the controller does not time after a
	// short one (see timed); the owner's alone.
	sampling uint8
	long     bool          // the last timed task ran for longShot or longer
	start    time.Duration // when the task in hand started, if the controller times it; the owner's alone
	// clock is the owner's last reading of the pool's clock, zero for none
	// since it parked, and fresh tells whether it was read as the task
	// before the one in hand ended (see runControlled); the owner's alone.
	clock time.Duration
	fresh bool
	// woke tells whether the task in hand is the first the owner took
	// since it parked: one handed to it, or one that entered the queue after
	// the owner found it empty, so that it waited no longer than the owner
	// took to wake (see runControlled); the owner's alone.
	woke bool
	// deadlines are the rest of the block that the owner takes its tasks'
	// deadline contexts from (see slot.deadlineContext); the owner's alone.
	deadlines []deadlineContext
}

const (
	slotIdle      uint32 = iota // no task
	slotHolding                 // a task taken from the queue that has not started: it waits for a rate-limit token
	slotRunning                 // a task executing
	slotStarting                // a task handed to a loop that ants is starting: counted Running
	slotAbandoned               // Shutdown counted the task Abandoned; the owner counts nothing more
)

// worker is the record of one worker loop. Records are kept in Pool.all for
// Stats and Shutdown, and reused by later loops.
type worker struct {
	slot
	// wake is where the worker, parked, gets what its claimer sends: a
	// notice, or a task handed over (see park.go). It holds one item.
	wake  chan item
	idx   uint32        // the record's place in Pool.indexed, plus one: its name on the idle stack
	below atomic.Uint32 // on the idle stack: the idx of the worker below, zero for none
	park  atomic.Uint32 // parkBusy, parkIdle, parkAsleep or parkStale
	pool  *Pool
	// loopFn is w.loop, bound once so that starting a loop does not
	// allocate.
	loopFn func()
	// first is the loop's first task, when it was started for one. Its
	// owner's alone.
	first    item
	hasFirst bool
}

// activate takes a place for a new worker loop in active, and reports false
// when the cap is reached.
func (p *Pool) activate() bool {
	for {
		n := p.active.Load()
		if n >= p.workers.Load() {
			return false
		}
		if p.active.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// startWorker starts a worker loop on ants, in a place that activate took,
// with first as its first task if it is not nil. The record is a free one,
// or a new one.
func (p *Pool) startWorker(first *item) {
	p.mu.Lock()
	var w *worker
	if n := len(p.free); n > 0 {
		w, p.free = p.free[n-1], p.free[:n-1]
	} else {
		w = &worker{pool: p, wake: make(chan item, 1)}
		w.counts = true
		w.loopFn = w.loop
		p.all = append(p.all, w)
		w.idx = uint32(len(p.all))
		// p.all only grows: a reader of an older header never reads the
		// element appended in place beyond it.
		indexed := p.all
		p.indexed.Store(&indexed)
	}
	p.startLoopLocked(w, first)
}

// startLoopLocked starts a loop on w's record, with first as its first task
// if it is not nil, and unlocks p.mu. The first task counts Queued (the slot
// holds it) from now on, so that Stats sees it while ants starts the loop.
// Once the pool has drained or been abandoned no loop starts (see release):
// the place is given back and first abandoned. Requires p.mu.
func (p *Pool) startLoopLocked(w *worker, first *item) {
	if p.phase.Load() >= phaseDrained {
		p.free = append(p.free, w)
		p.mu.Unlock()
		p.active.Add(-1)
		p.left()
		if first != nil {
			p.settle(OutcomeAbandoned, report{wait: first.waiter(), queued: true, at: first.at()})
		}
		p.checkDrained()
		return
	}
	if p.reaper == nil {
		p.reaper = time.AfterFunc(time.Hour, p.reap)
		p.reaper.Stop()
	}
	if first != nil {
		w.first, w.hasFirst = *first, true
		if c := first.waiter(); c != nil {
			w.waiter.Store(c)
		}
		w.state.Store(slotStarting)
	}
	p.loops.start(w.loopFn)
	p.mu.Unlock()
	p.armReaper()
}

// loop is the body of a worker: it runs tasks from the queue until it
// retires (idle, surplus after Tune, or Shutdown with nothing left).
func (w *worker) loop() {
	for w.runTasks() { // a task panicked: the guard has settled it; go on
	}
}

// runTasks runs tasks, w.first first if it has one, until w retires; it
// returns true when a task panicked, once the panic is settled.
//
// A plain Task of a pool with none of the options that need more (a
// limiter, a maximum queue wait, an observer, a wrapper, overload control)
// runs on the fast path below: the claim, the call and the settling written
// out, with the panic guard this function's one deferred call rather than
// one per task. A panic unwinds to it, it settles the task Panicked, and
// loop calls runTasks again; a runtime.Goexit in a task runs the guard too,
// which hands the worker over (taskExited). Every other task is a record
// (see tag) that runRecord runs: it goes through run, which guards it, or
// through claim, which applies overload control.
func (w *worker) runTasks() (panicked bool) {
	p := w.pool
	var ctx context.Context // the context of the task in hand, for the guard
	returned := false
	defer func() {
		if returned {
			return
		}
		v := recover()
		if v == nil { // a task, its observer or its error handler called runtime.Goexit
			p.taskExited(w)
			return
		}
		if dc, ok := ctx.(*deadlineContext); ok {
			dc.release()
		}
		exited := true
		defer func() {
			if exited { // the error handler called runtime.Goexit
				p.taskExited(w)
			}
		}()
		p.taskPanicked(&w.slot, ctx, v, debug.Stack())
		exited = false
		panicked = true
	}()
	var it item // the task in hand; not the guard's, which needs only ctx
	for {
		if w.hasFirst { // its slot may be starting: claim looks
			it, w.first, w.hasFirst = w.first, item{}, false
			w.runRecord(it, &ctx)
		} else {
			select {
			case it = <-p.queue: // the common case under load
			default:
				var ok bool
				if it, ok = p.next(w); !ok {
					returned = true
					return false
				}
			}
			if t, plain := it.run.(Task); plain {
				// The claim: idle to running, a move no one else makes;
				// then a look at the phase, which Shutdown's abandonment
				// moves before it looks at the slots.
				w.state.Store(slotRunning)
				if p.phase.word() >= phaseDrained {
					if p.isAbandoned() {
						p.finish(&w.slot, it, OutcomeAbandoned, report{queued: true})
						continue
					}
				}
				var err error
				if d := p.opts.taskTimeout; d > 0 {
					dc := w.deadlineContext(p, it.ctx, d)
					ctx = dc
					err = t(dc)
					dc.release()
				} else {
					if valueless(&it.ctx) {
						ctx = p.base
					} else {
						ctx = &taskContext{pool: p.base, values: it.ctx}
					}
					err = t(ctx) // a direct call: the common case
				}
				// The settling: a completed task is counted in the
				// worker's own word (see slotState.complete).
				if err != nil || !w.state.complete() {
					p.taskEnded(&w.slot, it, ctx, err)
				}
			} else if st, ok := it.run.(*stampedTask); ok && p.route == routeControlled {
				w.runControlled(st.at, it, &ctx) // runRecord's first case, a call sooner
			} else {
				w.runRecord(it, &ctx)
			}
		}
		// Anything but the next task: Shutdown, or a cap to retire for.
		if p.phase.word() != phaseOpen && p.afterTask(w) {
			returned = true
			return false
		}
	}
}

// runRecord runs a task that is not a plain Task of the fast path: a
// loop's first task, a task someone waits for, a Job, or any task of a
// pool whose tasks are guarded (see run) or controlled (see claim). It
// sets *ctx to the task's context, for runTasks' guard.
func (w *worker) runRecord(it item, ctx *context.Context) {
	p := w.pool
	if p.route == routeControlled {
		switch r := it.run.(type) {
		case *stampedTask:
			w.runControlled(r.at, it, ctx)
			return
		case routedTask:
			w.runControlled(0, it, ctx)
			return
		}
	}
	w.woke = false // read by runControlled alone
	if p.route == routeGuarded {
		p.run(&w.slot, it)
		return
	}
	if p.claim(&w.slot, &it, false) {
		w.runClaimed(it, ctx)
	}
}

// runClaimed runs it, which w has claimed, with its context, which it
// sets in *ctx for runTasks' guard; feeds the controller the run time if
// w times the task (see startTiming); and settles it, counting a
// completion in w's own word.
func (w *worker) runClaimed(it item, ctx *context.Context) {
	p := w.pool
	var dc *deadlineContext
	if d := p.opts.taskTimeout; d > 0 {
		dc = w.deadlineContext(p, it.ctx, d)
		*ctx = dc
	} else {
		*ctx = newTaskContext(p.base, &it)
	}
	err := it.run.run(*ctx)
	if w.start != 0 { // timed (see startTiming, runControlled)
		p.ran(&w.slot, outcomeOf(err))
	}
	if dc != nil {
		dc.release()
	}
	if err != nil || !w.state.complete() {
		p.taskEnded(&w.slot, it, *ctx, err)
	}
}

// afterTask runs after a task, on a pool that is no longer open or whose
// cap was lowered: it reports whether w retires as surplus. While Shutdown
// drains the pool, a task completed on the fast path tells Shutdown, which
// waits for the last one (see checkDrained).
func (p *Pool) afterTask(w *worker) bool {
	// While the queue holds tasks the pool cannot have drained (see tell).
	if p.closing() && len(p.queue) == 0 {
		p.checkDrained()
	}
	return p.checkSurplus(w)
}

// checkSurplus retires w, and reports true, while more worker loops are
// active than the cap allows; it clears phaseShrunk once none are. Tune
// lowers the cap and then sets the flag, and checkSurplus clears it and
// then looks at the cap again, so a shrinking that comes meanwhile is
// never missed.
func (p *Pool) checkSurplus(w *worker) bool {
	for p.phase.word()&phaseShrunk != 0 {
		if p.active.Load() > p.workers.Load() {
			if p.retire(w, surplus) {
				return true
			}
			continue
		}
		p.phase.clearShrunk()
		if p.active.Load() > p.workers.Load() {
			p.phase.setShrunk()
		}
	}
	return false
}

// claim moves s to running for it (from idle, or from starting for a
// loop's first task) and reports whether it may run, or settles it:
// Abandoned, or Dropped if its waiter took it back (Job.Do). swapped tells
// whether the caller has already moved s from idle to running: the
// workers' fast path (see runTasks) does that itself for plain tasks and
// calls claim for the rest.
func (p *Pool) claim(s *slot, it *item, swapped bool) bool {
	if swapped || p.route != routeControlled {
		return p.claimSlot(s, it, swapped)
	}
	now, keep := p.control(it)
	if !keep || !p.claimSlot(s, it, false) {
		return false
	}
	p.startTiming(s, now)
	return true
}

// claimSlot is claim without overload control.
func (p *Pool) claimSlot(s *slot, it *item, swapped bool) bool {
	if c := it.waiter(); c != nil {
		s.waiter.Store(c) // before the claim: Shutdown reads it after its own
	}
	if !swapped && !s.state.CompareAndSwap(slotIdle, slotRunning) && !s.state.CompareAndSwap(slotStarting, slotRunning) || p.isAbandoned() {
		p.finish(s, *it, OutcomeAbandoned, report{queued: true, at: it.at()})
		return false
	}
	return p.claimAwaited(s, it)
}

// claimAwaited marks an awaited task started, and settles it Dropped,
// reporting false, when Job.Do's waiter took it back.
func (p *Pool) claimAwaited(s *slot, it *item) bool {
	if c := it.waiter(); c != nil && !c.claim() {
		p.finish(s, *it, OutcomeDropped, report{queued: true, at: it.at()})
		return false
	}
	return true
}

// taskEnded settles a task of the workers that did not complete on their
// fast path: it returned err, or it returned nil after Shutdown counted it
// Abandoned meanwhile.
func (p *Pool) taskEnded(s *slot, it item, ctx context.Context, err error) {
	if err == nil {
		p.finish(s, it, OutcomeCompleted, report{queued: true, started: true, at: it.at()})
		return
	}
	if !p.isAbandoned() && !echoesGroup(it, err) {
		p.handleError(ctx, err)
	}
	p.finish(s, it, OutcomeFailed, report{queued: true, started: true, at: it.at(), err: err})
}

// taskPanicked settles a task of the workers that panicked with v. It
// started, so its waiter, if any, has heard of it.
func (p *Pool) taskPanicked(s *slot, ctx context.Context, v any, stack []byte) {
	err := &PanicError{Value: v, Stack: stack}
	if !p.isAbandoned() {
		p.handleError(ctx, err)
	}
	p.finish(s, item{}, OutcomePanicked, report{queued: true, started: true, err: err})
}

// next returns the next task for w once the queue has none at hand: it
// parks w until one comes, or reports false when w retires (on a notice,
// as surplus, or because Shutdown has begun and nothing is left to drain).
// A parked worker sleeps on its own wake channel (see park.go).
func (p *Pool) next(w *worker) (item, bool) {
	for {
		if p.closing() {
			if it, ok := p.drainOne(); ok {
				return it, true
			}
			if p.retire(w, closing) {
				return item{}, false
			}
			continue // a task arrived as w was leaving
		}
		if p.active.Load() > p.workers.Load() && p.retire(w, surplus) {
			return item{}, false
		}
		if p.delays != nil { // the queue has emptied: no queue stands
			p.delays.emptied()
		}
		w.clock, w.fresh = 0, false // it may sleep a while
		p.park(w)
		// Look again, now that w is on the stack: either this look, or the
		// other side's look at the stack, sees the other (see park.go).
		it, took := p.takeTask()
		if took || p.closing() || p.active.Load() > p.workers.Load() {
			if !p.unpark(w) {
				<-w.wake // claimed meanwhile: a notice, which w, awake, needs no more
			}
			if took {
				return p.woke(w, it), true
			}
			continue // to drain, or to retire as surplus
		}
		var woke item
		if p.sleep(w) {
			if cap(p.queue) == 0 && p.waiting.Load() > 0 {
				p.signalSpare()
			}
			woke = <-w.wake
		} else { // claimed before it could sleep: a notice
			woke = <-w.wake
		}
		n, ok := woke.run.(notice)
		if !ok { // a task handed over while the queue was empty
			w.woke = true
			return woke, true
		}
		if n == noticeRetire && !p.closing() && p.retire(w, noticed) {
			return item{}, false
		}
		if it, ok := p.takeTask(); ok {
			return p.woke(w, it), true
		}
	}
}

// woke marks it, which w took from the queue as it woke, as taken after a
// sleep (see worker.woke), and passes the wake on while tasks remain
// queued (see wakeForQueue).
func (p *Pool) woke(w *worker, it item) item {
	w.woke = true
	p.wakeForQueue()
	return it
}

// wakeForQueue wakes an idle worker when tasks are still queued, after a
// worker woke to take one: the worker that a submitter woke may have
// taken a task that another submitter, who found no worker idle, left for
// it when it looked again after parking, and so it passes the wake on.
func (p *Pool) wakeForQueue() {
	if p.parked.Load() > 0 && len(p.queue) > 0 {
		p.wakeIdle(1, noticeQueue)
	}
}

// drainOne takes a task from the queue while Shutdown drains it. After an
// abandonment it takes none: abandon (or a late submitter, see admitted)
// empties the queue and counts what it held.
func (p *Pool) drainOne() (item, bool) {
	if p.isAbandoned() {
		return item{}, false
	}
	return p.takeTask()
}

// takeTask takes the task at the head of the queue, and reports false when
// the queue holds none.
func (p *Pool) takeTask() (item, bool) {
	select {
	case it := <-p.queue:
		return it, true
	default:
		return item{}, false
	}
}

// Why a worker retires.
type retirement uint8

const (
	noticed retirement = iota // it received a notice: surplus after Tune, or idle; the last worker stays
	surplus                   // Tune made the cap smaller than active
	closing                   // Shutdown began and the queue is empty
)

// retire takes w out of active if why allows it, and reports whether it
// did. The last worker never retires on a notice, so a submitter waiting
// for room always has a worker that will come back for its task.
//
// Whatever the reason, the retiring worker looks at the queue again after
// leaving active: together with admitted, where a submitter fills the queue
// and then reads active, one of the two sees the other, and no task is left
// behind while a place is free. If a task is queued and a place is free,
// the worker takes the place again and stays (retire reports false); if no
// place is free, the workers that hold them take the task.
func (p *Pool) retire(w *worker, why retirement) bool {
	for {
		n := p.active.Load()
		switch {
		case why == noticed && n <= 1:
			return false
		case why == surplus && n <= p.workers.Load():
			return false
		}
		if p.active.CompareAndSwap(n, n-1) {
			break
		}
	}
	// A task arrived as w was leaving: in the queue, or, in a queue without
	// a buffer, with a submitter waiting for a worker's hands.
	if (len(p.queue) > 0 || why != closing && cap(p.queue) == 0 && p.waiting.Load() > 0) && !p.isAbandoned() && p.activate() {
		return false
	}
	// The record waits in free for a loop to reuse it: it keeps no
	// finished task's context, nor a clock reading the next loop would
	// take for its own. Its entry may still stand, stale, on the idle stack,
	// until a popper drops it (see park.go).
	w.deadlines = nil
	w.clock, w.fresh = 0, false
	p.mu.Lock()
	p.free = append(p.free, w)
	p.mu.Unlock()
	p.left()
	if why == closing {
		p.checkDrained()
	}
	return true
}

// reap runs every idleTimeout while more than one worker loop is active,
// and retires about half of the workers that are parked at that moment, by
// sending them notices: an idle pool shrinks to one worker within a few
// timeouts, and a busy one, whose workers are seldom parked, loses little.
func (p *Pool) reap() {
	for {
		p.wakeIdle(min((p.parked.Load()+1)/2, p.active.Load()-1), noticeRetire)
		if p.active.Load() > 1 && !p.closing() {
			p.reaper.Reset(idleTimeout)
			return
		}
		p.reaping.Store(false)
		// A worker that started meanwhile saw reaping and did not arm the
		// timer: look again.
		if p.active.Load() <= 1 || p.closing() || !p.reaping.CompareAndSwap(false, true) {
			return
		}
	}
}

// armReaper makes reap run in idleTimeout if it is not already due.
func (p *Pool) armReaper() {
	if p.active.Load() > 1 && !p.closing() && p.reaping.CompareAndSwap(false, true) {
		p.reaper.Reset(idleTimeout)
	}
}

// retireParked wakes parked workers after Tune made the pool smaller, so
// that they retire now rather than take new tasks beyond the new cap.
func (p *Pool) retireParked() {
	p.wakeIdle(min(p.active.Load()-p.workers.Load(), p.parked.Load()), noticeRetire)
}

// wakeParked wakes every parked worker once Shutdown has begun: they find
// the pool closed and come to drain the queue, and none parks again.
func (p *Pool) wakeParked() {
	p.wakeIdle(math.MaxInt64, noticeClose)
}

// taskExited takes over when a task, or the limiter, observer or error
// handler it reached, ended its worker's goroutine with runtime.Goexit
// (t.FailNow in a test, say). It settles the task in hand, if it was not
// settled yet: Failed if it had started, Dropped if it was waiting for its
// rate-limit token. Then the worker's record and place pass to a new
// goroutine, which goes on where this one stopped: the queue is never left
// without the worker it had, during a drain too, and the record is never
// reused by another loop while this one still counts its task. The hand-over
// is deferred, since settling calls the observer, which may call Goexit
// again.
func (p *Pool) taskExited(w *worker) {
	defer p.restart(w)
	switch w.state.Load() {
	case slotHolding: // the limiter called Goexit: the task never started
		it := w.held
		w.held = item{}
		p.finish(&w.slot, it, OutcomeDropped, report{queued: true, at: it.at(), err: errLimiterGoexit})
	case slotRunning, slotStarting, slotAbandoned:
		p.finish(&w.slot, item{}, OutcomeFailed, report{queued: true, started: true, err: errGoexit})
	}
	// slotIdle: the task was settled before the Goexit (in the observer).
}

// restart gives w's place to a new loop on w's record after its goroutine
// called runtime.Goexit, or gives the place up if the pool has shrunk meanwhile
// (with retire's look at the queue).
func (p *Pool) restart(w *worker) {
	if p.active.Load() > p.workers.Load() && p.retire(w, surplus) {
		return
	}
	p.mu.Lock()
	p.startLoopLocked(w, nil)
}

var errLimiterGoexit = errors.New("bgpool: rate limiter called runtime.Goexit; task dropped")

var errGoexit = errors.New("bgpool: task called runtime.Goexit")

// run is the guarded pools' part of the hot path: mark the task running,
// run it, and settle it. Pools with a rate limit, a maximum queue wait or
// a queue delay target pass through gate first; with
// WithAdaptiveConcurrency the controller reads the task's run time (see
// startTiming).
func (p *Pool) run(s *slot, it item) {
	var now time.Duration // the clock gate read, if it did
	if p.limiter != nil || p.opts.maxQueueWait > 0 || p.delays != nil {
		if c := it.waiter(); c != nil {
			s.waiter.Store(c) // before the slot leaves idle, as in claim
		}
		if !p.gate(s, &it, &now) || !p.claimAwaited(s, &it) {
			return
		}
	} else if !p.claim(s, &it, false) {
		return
	}
	p.startTiming(s, now)
	out, ran, err := p.execute(s, it, true)
	if s.start != 0 {
		p.ran(s, out)
	}
	p.finish(s, it, out, report{queued: true, started: true, at: it.at(), ran: ran, err: err})
}

// finish moves s back to idle and settles its task with out, unless
// Shutdown has already counted it Abandoned; then only the observer hears
// of it.
func (p *Pool) finish(s *slot, it item, out Outcome, r report) {
	if !r.started {
		r.wait = it.waiter() // it ends without running: tell Do, Group or Future
	}
	for {
		st := s.state.Load()
		if st == slotIdle { // settled already: taskExited after a Goexit in the observer
			return
		}
		if st == slotAbandoned {
			s.state.Store(slotIdle)
			if r.wait != nil {
				p.notifyUnrun(r.wait, OutcomeAbandoned)
			}
			if len(p.opts.observers) > 0 {
				r.err = nil
				p.observe(OutcomeAbandoned, r)
			}
			return
		}
		if out == OutcomeCompleted && s.counts && st == slotRunning {
			if s.state.complete() { // counted in the worker's own word
				p.tell(out, r)
				return
			}
			continue
		}
		if s.state.CompareAndSwap(st, slotIdle) {
			break
		}
	}
	p.settle(out, r)
}

// gate decides whether a task taken from the queue may start: it has not
// waited longer than WithMaxQueueWait, the queue's delay control keeps it
// (WithQueueDelayTarget), and the limiter gives it a token. It
// reports false when it has settled the task instead. While the task waits
// for its token, s is holding: Stats counts it Queued, and Shutdown's
// deadline abandons it (cancelling the wait).
//
// When gate reads the clock, it stores the time in *now, for run.
func (p *Pool) gate(s *slot, it *item, now *time.Duration) bool {
	if !s.state.CompareAndSwap(slotIdle, slotHolding) && !s.state.CompareAndSwap(slotStarting, slotHolding) {
		p.finish(s, *it, OutcomeAbandoned, report{queued: true, at: it.at()}) // a first task abandoned as its loop started
		return false
	}
	if p.isAbandoned() {
		p.finish(s, *it, OutcomeAbandoned, report{queued: true, at: it.at()})
		return false
	}
	if p.opts.maxQueueWait > 0 || p.delays != nil {
		*now = p.now()
		if p.opts.maxQueueWait > 0 && *now-it.at() > p.opts.maxQueueWait {
			p.finish(s, *it, OutcomeExpired, report{queued: true, at: it.at()})
			return false
		}
		if p.delays != nil && p.delayed(*now, it) {
			p.finish(s, *it, outcomeDelayed, report{queued: true, at: it.at()})
			return false
		}
	}
	if p.limiter != nil {
		*now = 0 // the token may take a while: the task starts later
		s.held = *it
		err := p.waitToken()
		s.held = item{}
		if err != nil {
			if p.isAbandoned() {
				p.finish(s, *it, OutcomeAbandoned, report{queued: true, at: it.at()})
				return false
			}
			err = fmt.Errorf("bgpool: rate limiter failed; task dropped: %w", err)
			p.handleError(it.ctx, err)
			p.finish(s, *it, OutcomeDropped, report{queued: true, at: it.at(), err: err})
			return false
		}
	}
	if !s.state.CompareAndSwap(slotHolding, slotRunning) { // abandoned while it waited
		p.finish(s, *it, OutcomeAbandoned, report{queued: true, at: it.at()})
		return false
	}
	return true
}

// waitToken waits for the limiter's token, until Shutdown's deadline at
// most. A panic in the limiter becomes its error.
func (p *Pool) waitToken() (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("bgpool: limiter panicked: %v", v)
		}
	}()
	return p.limiter.Wait(p.base)
}

// execute runs one task with its context, timeout and panic recovery, and
// hands an error to the error handler, unless Shutdown has abandoned the
// task. It returns how long the task ran when an observer needs it.
func (p *Pool) execute(s *slot, it item, queued bool) (out Outcome, ran time.Duration, err error) {
	var ctx context.Context
	if p.opts.taskTimeout > 0 {
		dc := s.deadlineContext(p, it.ctx, p.opts.taskTimeout)
		defer dc.release()
		ctx = dc
	} else {
		ctx = newTaskContext(p.base, &it)
	}
	var start time.Time
	if len(p.opts.observers) > 0 {
		start = time.Now()
	}
	var isPanic bool
	if p.opts.wrap != nil {
		err, isPanic = p.callWrapped(ctx, it, queued)
	} else {
		err, isPanic = call(ctx, it.run)
	}
	if !start.IsZero() {
		ran = time.Since(start)
	}
	if err == nil {
		return OutcomeCompleted, ran, nil
	}
	if !p.isAbandoned() && !echoesGroup(it, err) {
		p.handleError(ctx, err)
	}
	if isPanic {
		return OutcomePanicked, ran, err
	}
	return OutcomeFailed, ran, err
}

// echoesGroup reports whether it is a Group's task whose err only echoes a
// sibling's failure (see Group).
func echoesGroup(it item, err error) bool {
	c := it.waiter()
	return c != nil && c.group != nil && c.group.echoes(c, err)
}

// call runs task, turning a panic into a *PanicError.
func call(ctx context.Context, task runner) (err error, isPanic bool) {
	defer func() {
		if v := recover(); v != nil {
			err, isPanic = &PanicError{Value: v, Stack: debug.Stack()}, true
		}
	}()
	return task.run(ctx), false
}

// callWrapped runs it's task through the pool's task wrapper (see
// WithTaskWrapper): the task's panic becomes an error for the wrapper, and
// is counted a panic again when the wrapper returns it.
func (p *Pool) callWrapped(ctx context.Context, it item, queued bool) (err error, isPanic bool) {
	var info TaskInfo
	if q, ok := it.job(); ok {
		info.Kind = q.jobArgs().Kind()
	}
	if c := it.waiter(); c != nil {
		info.Awaited = true
		info.Kind = c.kind
	}
	if queued {
		info.QueueWait = max(0, p.now()-it.at())
	}
	var recovered error
	run := func(ctx context.Context) error {
		err, panicked := call(ctx, it.run)
		if panicked {
			recovered = err
		}
		return err
	}
	err, isPanic = call(ctx, Task(func(ctx context.Context) error { return p.opts.wrap(ctx, info, run) }))
	if !isPanic && recovered != nil && err == recovered {
		isPanic = true
	}
	if c := it.waiter(); c != nil { // a wrapper that panicked before it ran the task: tell the waiter
		c.end(err, false)
	}
	return err, isPanic
}

// handleError passes err to the error handler, recovering a panic in it.
func (p *Pool) handleError(ctx context.Context, err error) {
	defer func() {
		if v := recover(); v != nil {
			p.logger().ErrorContext(ctx, "bgpool: error handler panicked", "panic", v, "error", err)
		}
	}()
	if p.opts.onError != nil {
		p.opts.onError(ctx, err)
		return
	}
	var pe *PanicError
	if errors.As(err, &pe) {
		p.logger().ErrorContext(ctx, "bgpool: task panicked", "panic", pe.Value, "stack", string(pe.Stack))
		return
	}
	p.logger().ErrorContext(ctx, "bgpool: task failed", "error", err)
}
