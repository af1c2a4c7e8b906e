package bgpool

import (
	"context"
	"time"
)

// TaskInfo is what the pool knows of a task as it starts, for the function
// set with WithTaskWrapper.
type TaskInfo struct {
	// QueueWait is how long the task waited between its Submit and its
	// start, time spent waiting for room under Block included. It is zero
	// for a task run by CallerRuns.
	QueueWait time.Duration
	// Kind is the Kind of a Job's args (Job.Submit, Job.Go, Job.Do), and
	// empty for a plain task.
	Kind string
	// Awaited tells whether someone waits for the task: it was submitted
	// by Pool.Do, Job.Do, a Group or Submit[T].
	Awaited bool
}

// WithTaskWrapper sets a function that the pool calls in place of every
// task, with the task's context and what the pool knows of it: the hook for
// tracing (a span per task; see the contrib/otel module). wrap must call
// run once, with ctx or a context derived from it, and return what run
// returned. run does not panic: a panic in the task is recovered and
// returned as a *PanicError, which the pool, when wrap returns it, counts
// Panicked. A panic in wrap itself is recovered and counted Panicked too.
//
// wrap is called on the goroutine that runs the task (a worker, or the
// submitter under CallerRuns), from many goroutines at once: it must be
// safe for concurrent use. The default is none, and then the hot path pays
// one nil check; with a wrapper each task costs the call, a closure and
// the clock reads for QueueWait. A nil wrap means none.
func WithTaskWrapper(wrap func(ctx context.Context, info TaskInfo, run Task) error) Option {
	return optionFunc(func(o *options) error {
		o.wrap = wrap
		return nil
	})
}
