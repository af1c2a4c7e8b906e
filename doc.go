// Package bgpool runs background work for Go services safely: on a fixed
// number of goroutines, behind a bounded queue, with a chosen policy for
// overload, an optional rate limit, and a shutdown that drains the work
// within a deadline instead of losing it.
//
// It is the Go counterpart of the background tasks of Python web frameworks
// (Starlette's BackgroundTasks, asgi-background): an HTTP handler hands off
// slow work (mail, webhooks, cache fills), answers at once, and the work is
// neither unbounded under a traffic spike nor lost on a deploy.
//
//	p, err := bgpool.New(8,
//		bgpool.WithQueueSize(1000),
//		bgpool.WithPolicy(bgpool.Reject),
//	)
//	if err != nil {
//		return err
//	}
//	err = p.Submit(ctx, func(ctx context.Context) error {
//		return sendWelcomeMail(ctx, user) // ctx has the submitter's values, not its cancellation
//	})
//	if errors.Is(err, bgpool.ErrOverloaded) {
//		// the queue is full: answer 503, retry later, ...
//	}
//	...
//	shutdownCtx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
//	defer cancel()
//	err = p.Shutdown(shutdownCtx) // runs what is queued; abandons, and reports, what is left at the deadline
//
// # The pool
//
// New(size) makes a Pool that runs at most size tasks at once on the
// goroutines of an ants.Pool (github.com/panjf2000/ants/v2). Tasks that find
// no free worker wait in a FIFO queue of WithQueueSize tasks. When the queue
// is full too, the pool's Policy decides: Block (the default), BlockFor,
// Drop, Reject, DropOldest, CallerRuns, or a PolicyFunc of your own. Every
// task is counted in Stats and ends in exactly one outcome; nothing is lost
// silently.
//
// A task's context carries the values of the context it was submitted with
// (loggers, trace IDs) but not its cancellation, so a task started by an
// HTTP handler outlives the request. It is cancelled only by WithTaskTimeout
// or when Shutdown's deadline passes. Panics are recovered and reported as
// *PanicError to the error handler (WithErrorHandler; by default, slog).
//
// # How it works
//
// ants contributes the goroutines: each worker is a loop on a goroutine of
// an ants.Pool, started when a task needs it and given back to ants when it
// has been idle; the first worker starts with the first task, and once
// Shutdown has drained the pool, ants' goroutines exit right after the
// workers return. bgpool adds everything else: the cap on running tasks,
// the bounded queue, the policies, the rate limit, the accounting and the
// drain.
//
// The queue is a buffered channel of QueueSize tasks, and the workers
// receive from it. Submit counts the task, then tries a non-blocking send,
// so a steady stream of tasks costs a channel operation per task, not an
// ants submission; no lock is taken on that path besides the channel's
// own. Only when the buffer is full does Submit look further: start
// another worker if the cap allows, else apply the policy (Block waits as
// a blocked sender on the channel, which keeps waiting submitters in FIFO
// order).
//
// A worker that finds the queue empty parks: it puts itself on a lock-free
// stack of parked workers and sleeps on a channel of its own, a plain
// receive, where a select on the queue and a wake-up channel would cost
// three times as much each time it parks. A submitter that has filled the
// queue looks at the stack and wakes one worker; one that finds the queue
// empty and a worker asleep hands it the task directly. Tune, the reaper
// (which retires workers idle for a second) and Shutdown wake parked
// workers the same way, each with a notice. A worker looks again at the
// queue after it has parked, and the other sides look at the stack after
// they have acted, so one of the two always sees the other: no task waits
// while a worker sleeps.
//
// Outcomes are counted in atomic counters, each on its own cache line; a
// worker counts the tasks it completes in its own slot's state word, in
// the same atomic operation that ends the task. Stats reads them, the
// queue's length and the workers' states into one snapshot whose sum
// always adds up: in the reverse of a task's path, so that no task is seen
// twice, and again if a task ended meanwhile. A mutex guards only what
// changes when a worker starts or leaves, and Shutdown. A worker runs its
// tasks under one panic guard (a deferred recover) per run of tasks, not
// per task: a panic unwinds to it, it counts the task Panicked, and the
// worker starts a new run; a runtime.Goexit hands the worker's record and
// place to a new goroutine once the task is counted. After each task a
// worker reads one word, which says whether anything but the next task
// needs it: Shutdown, or a cap that Tune lowered.
//
// A task travels as one record, the queue's item, 32 bytes: the
// submitter's context (for its values only) and the task, whose type says
// what else the pool knows of it: a plain Task; a record someone waits on
// (Do, Group, Future), which the pool tells when the task ends without
// running; a Job's record, whose args can be handed off; or, in a pool that
// needs its tasks' admission time (an observer, a maximum queue wait, a
// wrapper, a queue delay target), a plain Task with that time, taken from a
// block of 64 made at once. The pool looks up no context value of its own
// on the way. Every outcome goes through one funnel, which counts it and
// then tells the waiter and the observer, so a waiter told that its task
// will not run finds it counted (a task that ran tells its own waiter as it
// returns, a moment before the count, as Do's doc says). The pool's life is
// one phase word (open, draining, drained or abandoned, then released),
// each transition made in one place. A reader finds them in the files
// named for them: admit.go (Submit's path), worker.go (the workers),
// park.go (parking and waking), policy.go (the policies and every Overflow
// action), stats.go (the funnel and Stats), lifecycle.go (the phases),
// shutdown.go (Shutdown), handoff.go (Jobs leaving the process),
// adaptive.go (overload control) and ants.go (the two calls bgpool makes
// into ants).
//
// With a rate limit (WithRateLimit, or a Limiter of your own with
// WithLimiter) a worker takes the next task and then waits for its token,
// so Submit never waits for the limiter and a slow limiter (a network
// round trip) holds up a worker, never a lock.
//
// # Overload control
//
// A pool's size is a guess, and one far too large overloads what its tasks
// call: every call waits longer, tasks time out while holding the
// downstream, and useful work collapses. WithAdaptiveConcurrency lets the
// pool find its size from its tasks' run times, the way TCP Vegas and
// Netflix's gradient limiter find a window from round trips: every 50 ms
// (longer when tasks are slow or rare) the cap becomes
// cap × lowest run time / median run time + 1.5 √cap, so run times that grow
// with the cap bring it down and flat ones let it grow, but never far
// beyond what the tasks use. Only tasks that ran are read; the lowest run
// time is a success's, and it rises only slowly, so that a long overload
// does not become the baseline. WithQueueDelayTarget keeps the queue from
// standing, after CoDel and Facebook's controlled-delay queue: once the
// tasks taken from the queue have waited longer than the target for 100 ms,
// those that waited longer are dropped at the head until the queue empties,
// so a burst that drains in time loses nothing and a standing queue adds no
// more than the target to any task's latency. A clock read costs as much as
// the rest of an empty task's way through the pool, so a worker reads the
// clock for the tasks it times (all of them while they run for 50µs or
// more, one in 16 otherwise) and judges the others' waits by its last
// reading, which lags by the run time of at most 15 short tasks: a wait is
// never overstated, so no task is dropped before it has waited the target.
// The first task a worker takes after it slept is not judged at all: the
// queue was empty when the worker parked, and no queue stands.
// Without either option none of this costs anything; the benchmarks
// module's overload benchmark measures both against fixed pools and
// failsafe-go's adaptive limiter.
//
// # Bad input
//
// Bad input is an error wherever a function returns one: New, Submit,
// TrySubmit, Shutdown, Serve. Constructors that return no error (Middleware,
// StatsHandler, Expvar) panic at once, with a message that starts with
// "bgpool:", when given a nil pool or option: that is a programming error
// that must not wait for the first request to show.
//
// # Waiting for tasks
//
// Pool.Submit hands a task off and forgets it. To wait for tasks and get their
// errors and results back, while they still run under the pool's cap,
// policy, rate limit and shutdown deadline: Pool.Do runs one task and
// returns its error; Submit[T] returns a Future of a task's value; and
// Pool.NewGroup makes a Group, errgroup.WithContext for the shared pool, for
// one request's fan-out. None of them hangs on a task that the pool drops or
// abandons: the waiter gets ErrDropped, or the error of Shutdown's deadline.
//
// # Jobs and durable hand-off
//
// A Job (NewJob) is a typed task whose args are plain data with a Kind, the
// shape of River's JobArgs. It runs in the process like any task; what it
// adds is that a Job that has not started can leave the process: with
// WithHandoff, the Spill policy hands a Job the pool cannot admit to a
// durable queue instead of dropping it, and Shutdown hands off the Jobs
// still queued instead of abandoning them. Such Jobs are counted HandedOff.
// The contrib/river module provides the Handoff (River on PostgreSQL) and
// runs River's jobs inside a pool (Job.Do).
//
// Shutdown starts the hand-off when the time left to its deadline is the
// reserve: a fifth of the grace (5s at most), or twice what the store needs
// for the tasks still queued, whichever is longer. What the store needs is
// learnt from every hand-off the pool has made, per call and per job, and
// starts from 10ms a call and 80µs a job (12,500 jobs a second: River on a
// PostgreSQL of the same machine took 16,000-21,000 a second in batches of
// 1,000 to 5,000, and 7,000 on a loaded one). Shutdown looks again
// every 50ms, since the queue shrinks as the workers drain it. Then it
// takes the queue: the closures go back in, the Jobs go to the Handoff,
// from a goroutine of Shutdown's, in batches of 100 to 5,000, sized to
// take about 250ms each, counted as each commits. Running tasks keep their workers until the deadline: the
// hand-off takes nothing from them. At the deadline, the Jobs not yet sent
// are abandoned; those in a call under way are counted when it returns.
//
// # HTTP
//
// Middleware attaches a pool to each request; Go submits a task from a
// handler; WithShedding answers 503 while the pool is saturated;
// WithAfterResponse starts tasks only after the handler has returned.
// Serve and ListenAndServe serve until a context ends (SIGTERM), then shut
// down the server and drain the pool within one grace period.
//
// # Observability
//
// Stats is a snapshot of gauges and counters, requests shed with 503
// included, the current cap and the queue's delay; StatsHandler serves it as JSON, Expvar publishes it with
// expvar, and WithObserver reports each task's outcome, queue wait and run
// time, for histograms (see the contrib/prometheus module).
package bgpool
