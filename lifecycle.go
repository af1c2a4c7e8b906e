package bgpool

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
)

// A phase is where a pool is in its life. It only moves forward, along
//
//	open ──Shutdown──▶ draining ──the last task ends──▶ drained ──┐
//	                      │                                      ├──▶ released
//	                      └──Shutdown's deadline──▶ abandoned ───┘
//
// The word in Pool.phase holds the first four; released, which follows
// either end, is the closing of lifecycle.released. Each transition is made
// by one function, named beside its phase, which closes the channels that
// announce it.
type phase = uint32

const (
	// phaseOpen: the pool admits tasks. It leaves for draining in
	// beginShutdown, under p.mu, which closes lifecycle.closing (waiting
	// submitters give up with ErrClosed) and wakes every parked worker,
	// which comes to drain the queue (see wakeParked).
	phaseOpen phase = iota
	// phaseDraining: nothing is admitted; queued tasks run and running ones
	// are waited for. It leaves for drained in checkDrained, when every task
	// submitted has reached its outcome, or for abandoned in abandon, when
	// Shutdown's deadline passes first. Both close lifecycle.done.
	phaseDraining
	// phaseDrained: every task has ended. release then waits for the
	// worker loops to return, releases ants and closes lifecycle.released.
	phaseDrained
	// phaseAbandoned: what was left is counted Abandoned and its context
	// cancelled with lifecycle.cause; lifecycle.abandoned is closed for
	// those who wait for tasks, which may never return. release follows at
	// once, without waiting for the loops.
	phaseAbandoned
)

// phaseShrunk is a flag beside the phase in its word: Tune, or the
// controller, has lowered the cap below the worker loops active, and the
// surplus has not all retired yet (see checkSurplus). A worker reads the
// word after each task, so that one load tells it whether anything but the
// next task needs it: Shutdown, or a cap to retire for.
const phaseShrunk = 4

// phaseBits masks the phase in its word.
const phaseBits = 3

// phaseWord holds a pool's phase and the phaseShrunk flag.
type phaseWord struct{ v atomic.Uint32 }

// Load returns the phase.
func (w *phaseWord) Load() phase { return w.v.Load() & phaseBits }

// word returns the phase and flags: phaseOpen alone means open, with no
// surplus to retire.
func (w *phaseWord) word() uint32 { return w.v.Load() }

// setShrunk sets phaseShrunk; clearShrunk clears it.
func (w *phaseWord) setShrunk()   { w.v.Or(phaseShrunk) }
func (w *phaseWord) clearShrunk() { w.v.And(^uint32(phaseShrunk)) }

// CompareAndSwap moves the phase from old to new, keeping the flag, and
// reports whether the phase was old.
func (w *phaseWord) CompareAndSwap(old, new phase) bool {
	for {
		v := w.v.Load()
		if v&phaseBits != old {
			return false
		}
		if w.v.CompareAndSwap(v, v&^phaseBits|new) {
			return true
		}
	}
}

// closing reports whether Shutdown has begun: the pool admits nothing.
func (p *Pool) closing() bool { return p.phase.Load() != phaseOpen }

// isAbandoned reports whether Shutdown's deadline has passed and abandoned
// what was left.
func (p *Pool) isAbandoned() bool { return p.phase.Load() == phaseAbandoned }

// lifecycle holds the signals of a pool's phases (see phase).
type lifecycle struct {
	// closing is closed on open → draining. It is sharded: every waiting
	// submitter's select locks the channel it waits on, twice, and one
	// channel shared by hundreds of waiters made its lock a point of
	// contention (see closingShard).
	closing [8]chan struct{}
	// done is closed on draining → drained or → abandoned.
	done chan struct{}
	// abandoned is closed on → abandoned, for those who wait for tasks (Do,
	// Group, Future): a running task is abandoned, but may never return.
	abandoned chan struct{}
	// cause is why Shutdown abandoned tasks; set before → abandoned.
	cause atomic.Pointer[error]
	// released is closed once ants has been released and, after a drain,
	// every worker loop has returned.
	released    chan struct{}
	releaseOnce sync.Once
	// releasing is set when release waits for the worker loops, and
	// loopsGone closed by the last one to leave (see left).
	releasing     atomic.Bool
	loopsGone     chan struct{}
	loopsGoneOnce sync.Once
}

func (l *lifecycle) init() {
	l.done = make(chan struct{})
	l.abandoned = make(chan struct{})
	l.released = make(chan struct{})
	l.loopsGone = make(chan struct{})
	for i := range l.closing {
		l.closing[i] = make(chan struct{})
	}
}

// beginShutdown moves the pool from open to draining and reports whether
// this call did. p.mu orders it with runHere's registration, which checks
// the phase under it, and with DropOldest. A worker that parks after the
// move sees it when it looks again (see park.go).
func (p *Pool) beginShutdown() bool {
	p.mu.Lock()
	first := p.phase.CompareAndSwap(phaseOpen, phaseDraining)
	if first {
		for _, c := range p.life.closing {
			close(c)
		}
		p.wakeParked()
	}
	p.mu.Unlock()
	if first {
		p.checkDrained()
	}
	return first
}

// closingShard returns one of the channels closed on open → draining,
// picked at random.
func (p *Pool) closingShard() <-chan struct{} {
	return p.life.closing[rand.Uint32()%uint32(len(p.life.closing))]
}

// checkDrained moves the pool from draining to drained once every task
// submitted has reached its outcome, and releases ants on a goroutine of
// its own: the caller may be one of ants' workers, which ants waits for.
// Anywhere else it does nothing, so it may be called whenever a task ends.
func (p *Pool) checkDrained() {
	if p.phase.Load() != phaseDraining || p.unsettled() != 0 {
		return
	}
	if p.phase.CompareAndSwap(phaseDraining, phaseDrained) {
		close(p.life.done)
		go p.release()
	}
}

// markAbandoned moves the pool from draining to abandoned, with cause, and
// reports whether this call did; abandon does the rest. It fails when the
// pool has drained meanwhile, or another Shutdown has abandoned it.
func (p *Pool) markAbandoned(cause error) bool {
	p.life.cause.CompareAndSwap(nil, &cause)
	return p.phase.CompareAndSwap(phaseDraining, phaseAbandoned)
}

// abandonErr is the error of a task that Shutdown abandoned: it matches
// the cause of Shutdown's deadline (context.DeadlineExceeded, say).
func (p *Pool) abandonErr() error {
	if err := p.life.cause.Load(); err != nil {
		return *err
	}
	return ErrClosed
}

// announceAbandoned closes the signals of → abandoned, once the tasks left
// are counted: the tasks' context, with the cause, then abandoned and done.
func (p *Pool) announceAbandoned() {
	p.cancel(*p.life.cause.Load())
	close(p.life.abandoned)
	close(p.life.done)
}

// release makes sure no worker loop starts any more and releases ants,
// once, then closes lifecycle.released. After a drain it first waits for
// every worker loop to return, on a channel that the last one closes (see
// left); ants' own goroutines exit right after, on their own. (ants'
// ReleaseContext would wait for its goroutines too, but it spins until they
// are gone, which kept a core busy for milliseconds.) After an abandonment
// it does not wait: workers still running abandoned tasks exit when those
// return.
func (p *Pool) release() {
	p.life.releaseOnce.Do(func() {
		// Taken once the pool has left draining: a loop that starts after
		// this sees the phase under p.mu and does not start, and one that
		// started before is seen by the wait below.
		p.mu.Lock()
		if p.reaper != nil {
			p.reaper.Stop()
		}
		p.mu.Unlock()
		if !p.isAbandoned() {
			p.life.releasing.Store(true)
			p.left()
			<-p.life.loopsGone
		}
		p.loops.release()
		close(p.life.released)
	})
}

// left runs after a worker loop has left active: once release waits for
// the loops and none is left, it tells release. The loop leaves active and
// then reads releasing, release sets releasing and then reads active, so
// one of the two sees the other.
func (p *Pool) left() {
	if p.active.Load() == 0 && p.life.releasing.Load() {
		p.life.loopsGoneOnce.Do(func() { close(p.life.loopsGone) })
	}
}

// isPoolContext reports whether ctx is the context of one of p's tasks.
func (p *Pool) isPoolContext(ctx context.Context) bool { return ctx.Value(poolKey{}) == p }
