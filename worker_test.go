package bgpool_test

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgpool/bgpool"
)

// goexitDuringDrain runs the scene of the tests below: a pool of 1 with a
// queue of 8, a task that blocks, 3 tasks queued behind it, Shutdown begun
// with ctx, and then the blocking task (or the observer or error handler it
// reaches) calls runtime.Goexit. It returns Shutdown's error and the Stats.
func goexitDuringDrain(t *testing.T, ctx context.Context, where string) (bgpool.Stats, error) {
	t.Helper()
	exit := make(chan struct{})
	started := make(chan struct{})
	var ran atomic.Int64
	opts := []bgpool.Option{bgpool.WithQueueSize(8), quietLogger()}
	var exited atomic.Bool
	goexitOnce := func() {
		if exited.CompareAndSwap(false, true) {
			runtime.Goexit()
		}
	}
	switch where {
	case "observer":
		opts = append(opts, bgpool.WithObserver(func(bgpool.TaskEvent) { goexitOnce() }))
	case "error handler":
		opts = append(opts, bgpool.WithErrorHandler(func(context.Context, error) { goexitOnce() }))
	}
	p := newPool(t, 1, opts...)
	require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
		close(started)
		<-exit
		switch where {
		case "task":
			runtime.Goexit()
		case "error handler":
			return assert.AnError
		}
		return nil
	}))
	<-started
	for range 3 {
		require.NoError(t, p.Submit(context.Background(), func(context.Context) error { ran.Add(1); return nil }))
	}
	done := shutdownAsync(ctx, p)
	waitStats(t, p, func(s bgpool.Stats) bool { return s.Queued == 3 })
	close(exit)
	err := receive(t, done, 10*time.Second, "Shutdown did not return after the Goexit")
	assert.Equal(t, int64(3), ran.Load(), "every queued task runs after the Goexit")
	return p.Stats(), err
}

func TestAGoexitDuringTheDrainLeavesNoQueuedTaskBehind(t *testing.T) {
	for _, where := range []string{"task", "observer", "error handler"} {
		t.Run("in the "+where, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s, err := goexitDuringDrain(t, ctx, where)
			require.NoError(t, err)
			assert.Equal(t, uint64(0), s.Abandoned)
			assert.Equal(t, uint64(4), s.Completed+s.Failed)
			assertBalanced(t, s)
		})
	}
	t.Run("with a ctx that has no deadline", func(t *testing.T) {
		s, err := goexitDuringDrain(t, context.Background(), "task")
		require.NoError(t, err)
		assert.Equal(t, uint64(3), s.Completed)
		assert.Equal(t, uint64(1), s.Failed)
	})
}

func TestTheWorkerThatReplacesAGoexitCountsEveryTaskOnce(t *testing.T) {
	runs := 300
	if testing.Short() {
		runs = 50
	}
	for i := range runs {
		p, err := bgpool.New(1, bgpool.WithQueueSize(64), quietLogger())
		require.NoError(t, err)
		release := make(chan struct{})
		require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
			<-release
			runtime.Goexit()
			return nil
		}))
		for range 32 {
			require.NoError(t, p.Submit(context.Background(), noop))
		}
		close(release)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = p.Shutdown(ctx)
		cancel()
		require.NoError(t, err, "run %d: Shutdown sees the pool drained", i)
		s := p.Stats()
		require.Equal(t, uint64(32), s.Completed, "run %d: %+v", i, s)
		require.Equal(t, uint64(1), s.Failed, "run %d: %+v", i, s)
		require.Equal(t, 0, s.Waiting+s.Queued+s.Running, "run %d: %+v", i, s)
	}
}

func TestAWorkerRetiringOnANoticeLeavesNoTaskBehind(t *testing.T) {
	// Tune down and up again sends notices to parked workers while tasks
	// arrive: a worker that leaves must not strand a task that arrived as
	// it left, while a place is free.
	runs := 2000
	if testing.Short() {
		runs = 200
	}
	p := newPool(t, 2, bgpool.WithQueueSize(4))
	for i := range runs {
		started, finish := make(chan struct{}), make(chan struct{})
		require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
			close(started)
			<-finish
			return nil
		}))
		<-started
		// One worker busy, the other parked (or starting).
		inner := make(chan struct{})
		p.Tune(1) // a notice to the parked worker, which leaves
		require.NoError(t, p.Submit(context.Background(), func(context.Context) error { close(inner); return nil }))
		p.Tune(2) // a place is free again
		select {
		case <-inner:
		case <-time.After(5 * time.Second):
			t.Fatalf("run %d: a queued task did not start while a place was free: %+v", i, p.Stats())
		}
		close(finish)
	}
}

// An observer that calls runtime.Goexit on every event does not cost the
// pool its worker: on a pool of one, the next task still runs.
func TestObserverCallingGoexitKeepsTheWorkerPlace(t *testing.T) {
	p := newPool(t, 1, quietLogger(), bgpool.WithObserver(func(bgpool.TaskEvent) { runtime.Goexit() }))
	require.NoError(t, p.Submit(context.Background(), noop))
	time.Sleep(50 * time.Millisecond)
	ran := make(chan struct{})
	require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
		close(ran)
		return nil
	}))
	receive(t, ran, time.Second, "the next task did not run")
}

// parkWorkers makes p, empty and of size n, start n worker loops and waits
// until they are parked.
func parkWorkers(t *testing.T, p *bgpool.Pool, n int) {
	t.Helper()
	g := newGate(n)
	for i := 0; i < n; i++ {
		require.NoError(t, p.Submit(context.Background(), g.task))
	}
	g.waitStarted(t, n)
	g.open()
	waitStats(t, p, idleWith(uint64(n)))
	time.Sleep(20 * time.Millisecond) // let them fall asleep
}

// staleNotice leaves a retirement notice in p's queue with no worker to
// take it: on one P, the workers that Submit wakes still count as parked
// when Tune reads parked, so retireParked sends more notices than there are
// parked receivers and the rest land in the buffer. p's workers are all
// parked; it returns after the busy tasks have started.
func staleNotice(t *testing.T, p *bgpool.Pool, busy, tuneTo int, task bgpool.Task, started <-chan struct{}) {
	t.Helper()
	for i := 0; i < busy; i++ {
		require.NoError(t, p.Submit(context.Background(), task)) // handed to a parked worker that has not run yet
	}
	p.Tune(tuneTo) // min(active-workers, parked) notices, more than are really parked
	for i := 0; i < busy; i++ {
		receive(t, started, 2*time.Second, "a busy task did not start")
	}
	time.Sleep(20 * time.Millisecond) // the noticed workers retire
}

// A task admitted while a worker place is free starts at once, even after
// Tune shrank and regrew the pool while its workers were parked; if it
// waited behind the busy tasks, which wait for it, the pool would deadlock.
func TestATaskAdmittedWhileAWorkerPlaceIsFreeStarts(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1)) // for determinism; it fails 30/30 on 2 Ps as well
	p := newPool(t, 3, bgpool.WithQueueSize(2))
	parkWorkers(t, p, 3)

	started, eRan := make(chan struct{}, 2), make(chan struct{})
	waitForE := func(context.Context) error {
		started <- struct{}{}
		select {
		case <-eRan: // the stranded task ran
		case <-time.After(3 * time.Second): // give up so the test ends
		}
		return nil
	}
	// Two busy tasks; Tune(1) sends two notices, one parked worker takes one
	// and the other stays in the buffer; Tune(3) finds active at the cap.
	for i := 0; i < 2; i++ {
		require.NoError(t, p.Submit(context.Background(), waitForE))
	}
	p.Tune(1)
	p.Tune(3)
	for i := 0; i < 2; i++ {
		receive(t, started, 2*time.Second, "a busy task did not start")
	}
	time.Sleep(20 * time.Millisecond) // the noticed worker retires: active = 2 < 3

	require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
		close(eRan)
		return nil
	}))
	receive(t, eRan, time.Second, "a task admitted with a worker place free did not start")
}

// Shrinking the pool with Tune while its workers are parked takes no queue
// slot and counts nothing as Queued: with three tasks running and none
// queued, Stats says so and TrySubmit is admitted to the queue of one.
func TestShrinkingTuneTakesNoQueueSlotAndCountsNothingQueued(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1)) // for determinism; it fails 30/30 on 2 Ps as well
	p := newPool(t, 4, bgpool.WithQueueSize(1), quietLogger())
	parkWorkers(t, p, 4)

	started, release := make(chan struct{}, 3), make(chan struct{})
	t.Cleanup(func() { close(release) })
	busy := func(context.Context) error {
		started <- struct{}{}
		<-release
		return nil
	}
	// Three busy tasks; Tune(2) sends min(4-2, 4) = 2 notices for one
	// parked worker: one notice stays in the queue.
	staleNotice(t, p, 3, 2, busy, started)
	s := p.Stats()
	assert.Equal(t, 0, s.Queued, "no task is queued: got %+v", s)
	assert.Equal(t, 3, s.Running, "three tasks run: got %+v", s)

	err := p.TrySubmit(context.Background(), noop)
	assert.NoError(t, err, "the queue (size 1) holds no task, so TrySubmit must be admitted")
}

// The worker that replaces one whose task called runtime.Goexit honours a
// cap that Tune has shrunk: on a pool tuned to one worker, a queued task
// waits for the task still running.
func TestAWorkerReplacingAGoexitHonoursAShrunkCap(t *testing.T) {
	p := newPool(t, 2, bgpool.WithQueueSize(2), quietLogger())
	aStarted, aExit := make(chan struct{}), make(chan struct{})
	require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
		close(aStarted)
		<-aExit
		runtime.Goexit()
		return nil
	}))
	receive(t, aStarted, 2*time.Second, "the Goexit task did not start")
	releaseB := occupy(t, p, 1)

	p.Tune(1)
	cStarted := make(chan struct{})
	require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
		close(cStarted)
		return nil
	}))
	close(aExit) // A's worker leaves; B still runs, so C must wait for B

	select {
	case <-cStarted:
		t.Errorf("a queued task started while another ran on a pool tuned to 1 worker (%+v)", p.Stats())
	case <-time.After(300 * time.Millisecond): // C waits for B, as the cap says
	}
	releaseB()
	receive(t, cStarted, 2*time.Second, "C did not start after B returned")
}
