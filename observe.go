package bgpool

import "time"

// An Outcome is how a task ended, as reported to an observer (WithObserver).
type Outcome uint8

// The outcomes. Each but OutcomeExpired is also a counter in Stats; an
// expired task is counted Dropped there. Values may be added after
// OutcomeHandedOff in later versions.
const (
	OutcomeCompleted Outcome = iota + 1 // the task returned nil
	OutcomeFailed                       // the task returned an error (or called runtime.Goexit)
	OutcomePanicked                     // the task panicked
	OutcomeDropped                      // discarded by Drop, DropOldest or Spill, or kept by a WithAfterResponse handler that panicked
	OutcomeExpired                      // discarded after waiting longer than WithMaxQueueWait, or dropped by WithQueueDelayTarget
	OutcomeRejected                     // refused with an error: ErrOverloaded, ErrClosed or bad input
	OutcomeAbandoned                    // queued or running when Shutdown's deadline passed (a Job whose hand-off failed included)
	OutcomeHandedOff                    // a Job passed to the pool's Handoff (Spill, or queued at Shutdown's deadline) that accepted it
)

var outcomeNames = [...]string{"", "completed", "failed", "panicked", "dropped", "expired", "rejected", "abandoned", "handed_off"}

// String returns the outcome's lower-case name, as used in metric labels:
// "completed", "failed", "panicked", "dropped", "expired", "rejected",
// "abandoned" or "handed_off".
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) && o != 0 {
		return outcomeNames[o]
	}
	return "unknown"
}

// A TaskEvent describes a task that reached its outcome.
type TaskEvent struct {
	Outcome Outcome
	// Queued tells whether the task was admitted to the pool's queue (or
	// handed to a worker), so that QueueWait is its time there. It is false
	// for a task rejected or dropped on arrival, or run by CallerRuns.
	Queued bool
	// Started tells whether the task ran, so that RunTime is its run time.
	Started bool
	// QueueWait is how long the task waited between its Submit and its start
	// (or its discarding or abandonment), time spent waiting for room under
	// Block included. It is zero for a task that was never queued:
	// rejected, dropped on arrival, or run by CallerRuns.
	QueueWait time.Duration
	// RunTime is how long the task ran. It is zero for a task that did not
	// run.
	RunTime time.Duration
	// Err is the task's error, a *PanicError for a panic, or the error
	// Submit returned for a rejected task; nil otherwise.
	Err error
	// Workers is the pool's cap on running tasks when the task ended
	// (Stats.Workers): New's size, the last Tune, or where
	// WithAdaptiveConcurrency has moved it.
	Workers int
}

// WithObserver adds a function that the pool calls once for every task when
// it reaches its outcome, with its queue wait and run time: the hook for
// metrics such as histograms (see the contrib/prometheus and contrib/otel
// modules). Unlike other options, WithObserver adds to the ones before it,
// so that two metric backends can watch one pool: every observer is called,
// in the order given. The default is none, and then the pool reads no clock
// for it: the only cost on the hot path is a nil check. A nil fn adds none.
//
// fn is called synchronously, with no lock held, on the goroutine where the
// outcome happens (a worker, or the submitter for rejected and dropped
// tasks), possibly from many goroutines at once: it must be safe for
// concurrent use and quick. Tasks that Shutdown abandons in the queue are
// reported from a goroutine of their own, so that a slow fn cannot hold
// Shutdown past its deadline. A task abandoned while running is reported
// when it returns, so one that never returns is never reported (Stats
// counts it at once). A panic in fn is recovered and logged, and the
// observers after it are still called.
func WithObserver(fn func(TaskEvent)) Option {
	return optionFunc(func(o *options) error {
		if fn != nil {
			o.observers = append(o.observers, fn)
		}
		return nil
	})
}

// observe reports an outcome to the observers. A panic in one is recovered
// and logged, like one in the error handler, so that it can take neither a
// worker nor a submitter down with it, nor keep the others from hearing.
func (p *Pool) observe(out Outcome, r report) {
	if out == outcomeDelayed {
		out = OutcomeExpired
	}
	ev := TaskEvent{Outcome: out, Queued: r.queued, Started: r.started, RunTime: r.ran, Err: r.err, Workers: int(p.workers.Load())}
	if r.queued {
		ev.QueueWait = max(0, p.now()-r.at-r.ran)
	}
	for _, fn := range p.opts.observers {
		p.observeOne(fn, ev)
	}
}

func (p *Pool) observeOne(fn func(TaskEvent), ev TaskEvent) {
	defer func() {
		if v := recover(); v != nil {
			p.logger().Error("bgpool: observer panicked", "panic", v, "outcome", ev.Outcome.String())
		}
	}()
	fn(ev)
}
