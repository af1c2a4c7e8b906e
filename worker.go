package bgpool

import (
	"context"
	"errors"
	"fmt"
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
	state atomic.Uint32
	// held is the task the owner holds while it waits for a rate-limit
	// token, for taskExited: a limiter that calls runtime.Goexit ends the
	// goroutine before the task starts.
	held item
	// completed counts the tasks completed in this slot when it is a
	// worker's (see counters): a counter of the worker's own, which its
	// goroutine alone writes. Slots of CallerRuns tasks use the pool's.
	completed *atomic.Uint64
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
	done     padded        // the target of slot.completed
	wake     chan struct{} // unbuffered: notices while parked (see notify); closed when Shutdown begins
	pool     *Pool
	loopFn   func() // w.loop, bound once so that starting a loop does not allocate
	first    item   // the loop's first task, when it was started for one
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
		w = &worker{pool: p, wake: make(chan struct{})}
		w.completed = &w.done.Uint64
		w.loopFn = w.loop
		p.all = append(p.all, w)
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
			p.settle(OutcomeAbandoned, report{wait: first.waiter(), queued: true, at: first.at})
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
	it, ok := w.first, w.hasFirst
	w.first, w.hasFirst = item{}, false
	for w.runTasks(it, ok) { // a task panicked: the guard has settled it; go on
		ok = false
	}
}

// runTasks runs tasks, first the one given if has, until w retires; it
// returns true when a task panicked, once the panic is settled.
//
// A plain pool (no limiter, maximum queue wait, observer or wrapper) runs
// each task on the fast path below, whose panic guard is this function's
// one deferred call rather than one per task: a panic unwinds to it, it
// settles the task Panicked, and loop calls runTasks again. A
// runtime.Goexit in a task runs the guard too, which hands the worker over
// (taskExited). Other pools run each task through run, which guards it.
// Overload control rides the fast path: its tasks are records (see tag),
// which claim passes through control.
func (w *worker) runTasks(first item, has bool) (panicked bool) {
	p := w.pool
	var it item             // the task in hand, for the guard
	var ctx context.Context // its context, for the error handler
	var dc *deadlineContext // its deadline, to release
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
		if dc != nil {
			dc.release()
		}
		exited := true
		defer func() {
			if exited { // the error handler called runtime.Goexit
				p.taskExited(w)
			}
		}()
		p.taskPanicked(&w.slot, it, ctx, v, debug.Stack())
		exited = false
		panicked = true
	}()
	for {
		if has {
			it, has = first, false
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
		}
		if p.route == routeGuarded {
			p.run(&w.slot, it)
		} else {
			// The claim, written out (a call would cost a tenth of the
			// path): idle to running for a plain Task; a record (someone
			// waits for it, and Job.Do may have taken it back; or a Job)
			// goes through claim, and so does an abandoned task.
			t, plain := it.run.(Task)
			swapped := plain && w.state.CompareAndSwap(slotIdle, slotRunning)
			if swapped && !p.isAbandoned() || p.claim(&w.slot, &it, swapped) {
				switch {
				case p.opts.taskTimeout > 0:
					dc = w.deadlineContext(p, it.ctx, p.opts.taskTimeout)
					ctx = dc
				case plain && valueless(it.ctx):
					ctx = p.base
				default:
					ctx = newTaskContext(p.base, &it)
				}
				var err error
				if plain {
					err = t(ctx) // a direct call: the common case
				} else {
					err = it.run.run(ctx)
					if w.start != 0 { // timed by the controller (see startTiming)
						p.ran(&w.slot, outcomeOf(err))
					}
				}
				if dc != nil {
					dc.release()
					dc = nil
				}
				// The settling, written out: the worker counts its own
				// completions while the pool is open; the rest is rare.
				switch done := err == nil && w.state.CompareAndSwap(slotRunning, slotIdle); {
				case done && !p.closing():
					w.countCompleted()
				case done:
					p.completedSlow(&w.slot, &it, true)
				case err == nil: // Shutdown counted it Abandoned meanwhile
					p.completedSlow(&w.slot, &it, false)
				default:
					p.taskFailed(&w.slot, &it, ctx, err)
				}
			}
		}
		if p.active.Load() > p.workers.Load() && p.retire(w, surplus) {
			returned = true
			return false
		}
	}
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
		p.finish(s, *it, OutcomeAbandoned, report{queued: true, at: it.at})
		return false
	}
	return p.claimAwaited(s, it)
}

// claimAwaited marks an awaited task started, and settles it Dropped,
// reporting false, when Job.Do's waiter took it back.
func (p *Pool) claimAwaited(s *slot, it *item) bool {
	if c := it.waiter(); c != nil && !c.claim() {
		p.finish(s, *it, OutcomeDropped, report{queued: true, at: it.at})
		return false
	}
	return true
}

// taskFailed settles a task of the fast path that returned err.
func (p *Pool) taskFailed(s *slot, it *item, ctx context.Context, err error) {
	if !p.isAbandoned() && !echoesGroup(*it, err) {
		p.handleError(ctx, err)
	}
	p.finish(s, *it, OutcomeFailed, report{queued: true, started: true, at: it.at, err: err})
}

// taskPanicked settles a task of the fast path that panicked with v.
func (p *Pool) taskPanicked(s *slot, it item, ctx context.Context, v any, stack []byte) {
	err := &PanicError{Value: v, Stack: stack}
	if !p.isAbandoned() {
		p.handleError(ctx, err)
	}
	p.finish(s, it, OutcomePanicked, report{queued: true, started: true, at: it.at, err: err})
}

// next returns the next task for w, parking until one comes, or reports
// false when w has retired: on a notice, as surplus, or because Shutdown
// has begun and the queue is empty (or abandoned).
//
// A parked worker waits on the queue and on its own wake channel: no timer,
// and no channel shared with the other workers besides the queue, so that
// parking costs little more than a channel receive. Notices on the wake
// channel retire idle workers (reap) and surplus ones (Tune); Shutdown
// closes it.
func (p *Pool) next(w *worker) (item, bool) {
	for {
		select {
		case it := <-p.queue: // the common case under load: the queue is not empty
			return it, true
		default:
		}
		if p.closing() {
			if it, ok := p.drainOne(); ok {
				return it, true
			}
			if p.retire(w, closing) {
				return item{}, false
			}
			continue // a task arrived as w was leaving
		}
		p.parked.Add(1)
		// Checked after counting itself parked: Tune sets the new size first
		// and then looks at parked.
		if p.active.Load() > p.workers.Load() && p.retire(w, surplus) {
			p.parked.Add(-1)
			return item{}, false
		}
		select {
		case it := <-p.queue: // a submitter handed over a task
			p.parked.Add(-1)
			return it, true
		case <-w.wake: // a notice, or Shutdown began (closed)
			p.parked.Add(-1)
			if !p.closing() && p.retire(w, notice) {
				return item{}, false
			}
		}
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
	notice  retirement = iota // it received a notice: surplus after Tune, or idle; the last worker stays
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
		case why == notice && n <= 1:
			return false
		case why == surplus && n <= p.workers.Load():
			return false
		}
		if p.active.CompareAndSwap(n, n-1) {
			break
		}
	}
	if len(p.queue) > 0 && !p.isAbandoned() && p.activate() { // a task arrived as w was leaving
		return false
	}
	w.deadlines = nil // an idle record keeps no finished task's context
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
		p.notify(min((p.parked.Load()+1)/2, p.active.Load()-1))
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
	p.notify(min(p.active.Load()-p.workers.Load(), p.parked.Load()))
}

// notify sends up to n notices, each to a worker parked at that moment:
// a send on a worker's unbuffered wake channel succeeds only if it is
// parked. p.mu orders the sends with Shutdown's closing of the channels.
func (p *Pool) notify(n int64) {
	if n <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closing() {
		return
	}
	for _, w := range p.all {
		if n == 0 {
			return
		}
		select {
		case w.wake <- struct{}{}:
			n--
		default: // not parked
		}
	}
}

// wakeParked closes every worker's wake channel once Shutdown has begun:
// parked workers wake and find the pool closed, and none parks again.
// Requires p.mu.
func (p *Pool) wakeParked() {
	for _, w := range p.all {
		close(w.wake)
	}
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
		p.finish(&w.slot, it, OutcomeDropped, report{queued: true, at: it.at, err: errLimiterGoexit})
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
	p.finish(s, it, out, report{queued: true, started: true, at: it.at, ran: ran, err: err})
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
		if s.state.CompareAndSwap(st, slotIdle) {
			break
		}
	}
	if out == OutcomeCompleted && s.completed != nil {
		s.countCompleted() // the worker's own counter: no cache line shared with other workers
		p.tell(out, r)
		return
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
		p.finish(s, *it, OutcomeAbandoned, report{queued: true, at: it.at}) // a first task abandoned as its loop started
		return false
	}
	if p.isAbandoned() {
		p.finish(s, *it, OutcomeAbandoned, report{queued: true, at: it.at})
		return false
	}
	if p.opts.maxQueueWait > 0 || p.delays != nil {
		*now = p.now()
		if p.opts.maxQueueWait > 0 && *now-it.at > p.opts.maxQueueWait {
			p.finish(s, *it, OutcomeExpired, report{queued: true, at: it.at})
			return false
		}
		if p.delays != nil && p.delayed(*now, it) {
			p.finish(s, *it, outcomeDelayed, report{queued: true, at: it.at})
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
				p.finish(s, *it, OutcomeAbandoned, report{queued: true, at: it.at})
				return false
			}
			err = fmt.Errorf("bgpool: rate limiter failed; task dropped: %w", err)
			p.handleError(it.ctx, err)
			p.finish(s, *it, OutcomeDropped, report{queued: true, at: it.at, err: err})
			return false
		}
	}
	if !s.state.CompareAndSwap(slotHolding, slotRunning) { // abandoned while it waited
		p.finish(s, *it, OutcomeAbandoned, report{queued: true, at: it.at})
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
		info.QueueWait = max(0, p.now()-it.at)
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
