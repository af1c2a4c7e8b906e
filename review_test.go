package bgpool_test

// Adversarial review of the channel-queue core. Each test states the
// behaviour the core should have and fails on the defect it names; a test
// that would hang waits a bounded time and fails instead, and leaves nothing
// running once its cleanup has run.

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgpool/bgpool"
)

// A blocking observer must not hold Shutdown past its deadline: here the
// observer blocks on the last task's Completed event, after the task has
// been counted. Shutdown sees the pool drained, then waits in release for
// ants.ReleaseContext(context.Background()), which waits for the worker that
// is stuck in the observer: Shutdown's ctx is no longer looked at.
func TestReviewBlockingObserverOnLastTaskHoldsShutdownPastItsDeadline(t *testing.T) {
	entered, unblock := make(chan struct{}, 1), make(chan struct{})
	p := defectPool(t, 1, bgpool.WithObserver(func(ev bgpool.TaskEvent) {
		if ev.Outcome == bgpool.OutcomeCompleted {
			entered <- struct{}{}
			<-unblock
		}
	}))
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(unblock) }) }) // runs before the pool's cleanup

	require.NoError(t, p.Submit(context.Background(), noop))
	receive(t, entered, 2*time.Second, "the observer was not called")

	start := time.Now()
	err := shutdownWithin(t, p, 100*time.Millisecond, 2*time.Second)
	t.Logf("Shutdown returned %v after %v", err, time.Since(start))
}

// An observer that calls runtime.Goexit (t.FailNow in a test's observer)
// after a task has been counted Completed makes the worker's deferred
// taskExited count the same task Failed as well. Submitted is then smaller
// than the sum of the outcomes, unsettled() wraps around, and Shutdown never
// sees the pool drained.
func TestReviewObserverGoexitCountsATaskTwice(t *testing.T) {
	var once sync.Once
	p := defectPool(t, 1, quietLogger(), bgpool.WithObserver(func(bgpool.TaskEvent) {
		once.Do(runtime.Goexit)
	}))
	require.NoError(t, p.Submit(context.Background(), noop))
	s := waitStats(t, p, func(s bgpool.Stats) bool { return s.Ended() >= 1 && s.Running == 0 })
	time.Sleep(50 * time.Millisecond) // let the replacement loop settle anything else
	s = p.Stats()
	assert.Equal(t, uint64(1), s.Completed+s.Failed, "one task, counted once: got %+v", s)
	assert.Equal(t, uint64(1), s.Submitted, "got %+v", s)

	err := shutdownWithin(t, p, 500*time.Millisecond, 3*time.Second)
	assert.NoError(t, err, "a pool whose only task returned must drain")
}

// The same with an observer that calls runtime.Goexit every time: the
// second Goexit comes from taskExited's own settle, so taskExited never
// reaches startWorker and the worker's place in active is lost for good. On
// a pool of one, nothing runs again and a Block Submit would wait forever.
func TestReviewObserverGoexitLosesTheWorkerPlace(t *testing.T) {
	p := defectPool(t, 1, quietLogger(), bgpool.WithObserver(func(bgpool.TaskEvent) { runtime.Goexit() }))
	require.NoError(t, p.Submit(context.Background(), noop))
	time.Sleep(50 * time.Millisecond)
	ran := make(chan struct{})
	require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
		close(ran)
		return nil
	}))
	receive(t, ran, time.Second, "the next task did not run")
}

// Submitted reads like a counter (expvar publishes it), but Stats rebuilds
// it as ended+Queued+Running, and a task that a worker has taken from the
// queue and not yet marked running is in neither: under load Submitted goes
// down between two snapshots, which dashboards read as a counter reset.
// Stats' doc says Running includes tasks "handed to a worker and about to"
// run; the code leaves them out.
func TestReviewDeadlineAbandonsATaskThatHonoursItsContext(t *testing.T) {
	p := defectPool(t, 1, quietLogger())
	var cancels []context.CancelFunc
	t.Cleanup(func() {
		for _, c := range cancels {
			c()
		}
	})
	started := make(chan struct{})
	require.NoError(t, p.Submit(context.Background(), func(ctx context.Context) error {
		for range 20000 {
			_, c := context.WithCancel(ctx) // cancelling the pool's context now takes a while
			cancels = append(cancels, c)
		}
		close(started)
		<-ctx.Done()
		return ctx.Err()
	}))
	receive(t, started, 5*time.Second, "the task did not start")

	err := shutdownWithin(t, p, 20*time.Millisecond, 5*time.Second)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.ErrorContains(t, err, "abandoned 1 task (0 queued, 1 running)")
	s := waitStats(t, p, func(s bgpool.Stats) bool { return s.Running == 0 })
	assert.Equal(t, uint64(1), s.Abandoned, "got %+v", s)
	assert.Zero(t, s.Failed, "got %+v", s)
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
	time.Sleep(20 * time.Millisecond) // let them reach the park select
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

// A task admitted while a worker place is free must start. Here a stale
// notice sits at the head of the queue: admitted() starts a worker for the
// new task and gives it the head, the notice; that worker retires at once
// and the task waits behind two busy workers although the cap allows a
// third. If the busy tasks wait for it, the pool deadlocks.
func TestReviewStaleNoticeStrandsATaskWhileAWorkerPlaceIsFree(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1)) // for determinism; it fails 30/30 on 2 Ps as well
	p := defectPool(t, 3, bgpool.WithQueueSize(2))
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

// A notice left in the buffer takes a queue slot and is counted Queued:
// TrySubmit is refused although the queue holds no task, and Stats shows a
// running task as queued.
func TestReviewStaleNoticeTakesAQueueSlotAndCountsAsQueued(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1)) // for determinism; it fails 30/30 on 2 Ps as well
	p := defectPool(t, 4, bgpool.WithQueueSize(1), quietLogger())
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

// A worker whose task called runtime.Goexit is replaced without a look at
// the cap: after Tune shrank the pool, the replacement takes a queued task
// while the other worker still runs, so two tasks run on a pool of one, long
// after Tune returned.
func TestReviewGoexitReplacementIgnoresAShrunkCap(t *testing.T) {
	p := defectPool(t, 2, bgpool.WithQueueSize(2), quietLogger())
	aStarted, aExit := make(chan struct{}), make(chan struct{})
	require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
		close(aStarted)
		<-aExit
		runtime.Goexit()
		return nil
	}))
	receive(t, aStarted, 2*time.Second, "the Goexit task did not start")
	releaseB := hold(t, p)

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

// Time a Block submitter spends waiting for room is not time in the queue:
// the old core stamped a waiter's task when it was admitted. The new core
// keeps the stamp taken when Submit began, so a task that waited for room
// longer than WithMaxQueueWait is dropped as expired the moment a worker
// takes it, although it spent no time in the queue.
func TestReviewObserverCallingShutdownReturnsByItsDeadline(t *testing.T) {
	if os.Getenv("BGPOOL_REVIEW_CHILD") == "observer-shutdown" {
		observerShutdownChild()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestReviewObserverCallingShutdownReturnsByItsDeadline$")
	cmd.Env = append(os.Environ(), "BGPOOL_REVIEW_CHILD=observer-shutdown")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 3 {
		t.Fatalf("the observer's Shutdown(ctx with a 200ms deadline) did not return within 3s:\n%s", out)
	}
	require.NoError(t, err, "%s", out)
}

func observerShutdownChild() {
	var p *bgpool.Pool
	var calls atomic.Int32
	returned := make(chan error, 1)
	p, err := bgpool.New(1, bgpool.WithObserver(func(bgpool.TaskEvent) {
		if calls.Add(1) != 1 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		returned <- p.Shutdown(ctx)
	}))
	if err != nil {
		os.Exit(2)
	}
	if err := p.Submit(context.Background(), noop); err != nil {
		os.Exit(2)
	}
	select {
	case <-returned:
		os.Exit(0)
	case <-time.After(3 * time.Second):
		os.Exit(3)
	}
}
