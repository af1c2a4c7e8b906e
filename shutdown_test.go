package bgpool_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bgpool/bgpool"
)

// store is a Handoff that behaves like a database: each call costs perCall
// plus perJob a job, honours its ctx (a call that ends with ctx stores
// nothing), refuses the jobs whose args do not marshal to JSON and stores
// the others, as a Handoff may (see bgpool.JobError).
type store struct {
	perCall, perJob time.Duration
	mu              sync.Mutex
	rows            int
	calls           []int // the size of every call
}

func (s *store) Handoff(ctx context.Context, jobs []bgpool.JobArgs) error {
	s.mu.Lock()
	s.calls = append(s.calls, len(jobs))
	s.mu.Unlock()
	t := time.NewTimer(s.perCall + time.Duration(len(jobs))*s.perJob)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	var refused []error
	for i, j := range jobs {
		if _, err := json.Marshal(j); err != nil {
			refused = append(refused, &bgpool.JobError{Index: i, Err: err})
		}
	}
	s.mu.Lock()
	s.rows += len(jobs) - len(refused)
	s.mu.Unlock()
	return errors.Join(refused...)
}

func (s *store) stored() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rows
}

// badArgs are Job args that do not marshal.
type badArgs struct{}

func (badArgs) Kind() string                 { return "mail" }
func (badArgs) MarshalJSON() ([]byte, error) { return nil, errors.New("cannot marshal") }

func TestShutdownDrainsQueuedAndRunningTasks(t *testing.T) {
	p := newPool(t, 2, bgpool.WithQueueSize(10))
	release := occupy(t, p, 2)
	var ran atomic.Int64
	for i := 0; i < 10; i++ {
		require.NoError(t, p.Submit(context.Background(), func(context.Context) error { ran.Add(1); return nil }))
	}
	done := make(chan error, 1)
	go func() { done <- p.Shutdown(context.Background()) }()

	// Shutdown stops admitting at once.
	require.Eventually(t, func() bool {
		return errors.Is(p.Submit(context.Background(), noop), bgpool.ErrClosed)
	}, 5*time.Second, time.Millisecond)
	assert.ErrorIs(t, p.TrySubmit(context.Background(), noop), bgpool.ErrClosed)
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned %v while tasks were running", err)
	default:
	}

	release()
	require.NoError(t, <-done)
	assert.Equal(t, int64(10), ran.Load())
	s := p.Stats()
	assert.Equal(t, uint64(12), s.Completed)
	assert.Equal(t, s.Submitted-12, s.Rejected, "submits after Shutdown are counted Rejected")
	assert.Equal(t, s.Submitted, s.Ended())
	require.NoError(t, p.Shutdown(context.Background()), "a second Shutdown is fine")
}

func TestShutdownDeadlineAbandonsAndCancelsTasks(t *testing.T) {
	p := newPool(t, 2, bgpool.WithQueueSize(5))
	started := make(chan struct{}, 2)
	cancelled := make(chan error, 2)
	ignoring := make(chan struct{})
	// One task honours its context, one ignores it until released.
	require.NoError(t, p.Submit(context.Background(), func(ctx context.Context) error {
		started <- struct{}{}
		<-ctx.Done()
		cancelled <- context.Cause(ctx)
		return ctx.Err()
	}))
	require.NoError(t, p.Submit(context.Background(), func(ctx context.Context) error {
		started <- struct{}{}
		<-ignoring
		return nil
	}))
	<-started
	<-started
	for i := 0; i < 3; i++ {
		require.NoError(t, p.Submit(context.Background(), noop))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := p.Shutdown(ctx)
	elapsed := time.Since(start)
	require.Error(t, err)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "abandoned 5 tasks (3 queued, 2 running)")
	assert.Less(t, elapsed, 2*time.Second, "Shutdown returns at its deadline")

	cause := <-cancelled
	assert.ErrorContains(t, cause, "shutdown deadline passed")

	s := p.Stats()
	assert.Equal(t, uint64(5), s.Abandoned)
	close(ignoring)

	// The tasks returning later are not counted again.
	require.Eventually(t, func() bool { return p.Stats().Running == 0 }, 5*time.Second, time.Millisecond)
	s = p.Stats()
	assert.Equal(t, uint64(5), s.Abandoned)
	assert.Equal(t, uint64(0), s.Completed+s.Failed)
	assert.Equal(t, s.Submitted, s.Ended())

	err = p.Shutdown(context.Background())
	assert.ErrorContains(t, err, "5 tasks were abandoned")
}

func TestShutdownConcurrentCallsAllWait(t *testing.T) {
	p := newPool(t, 2)
	release := occupy(t, p, 2)
	errs := make(chan error, 4)
	for i := 0; i < 4; i++ {
		go func() { errs <- p.Shutdown(context.Background()) }()
	}
	require.Eventually(t, func() bool {
		return errors.Is(p.TrySubmit(context.Background(), noop), bgpool.ErrClosed)
	}, 5*time.Second, time.Millisecond)
	select {
	case err := <-errs:
		t.Fatalf("Shutdown returned %v before the tasks finished", err)
	default:
	}
	release()
	for i := 0; i < 4; i++ {
		assert.NoError(t, <-errs)
	}
}

// Shutdown called from one of the pool's own tasks does not deadlock: it
// returns nil without waiting for its caller, the pool refuses tasks from
// then on, every one of the pool's goroutines exits once the task returns,
// with no other Shutdown, and a later Shutdown returns nil.
func TestShutdownFromInsideATaskReturnsNilAndLeavesNoGoroutine(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	p := newPool(t, 1, bgpool.WithQueueSize(2))
	returned := make(chan error, 1)
	require.NoError(t, p.Submit(context.Background(), func(ctx context.Context) error {
		returned <- p.Shutdown(ctx)
		return nil
	}))
	assert.NoError(t, receive(t, returned, 5*time.Second, "Shutdown called from a task did not return"))
	assert.ErrorIs(t, p.Submit(context.Background(), noop), bgpool.ErrClosed)
	verifyNoLeak(t, opt)
	shutdown(t, p)
}

func TestShutdownDeadlineWithFakeTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, err := bgpool.New(1)
		require.NoError(t, err)
		require.NoError(t, p.Submit(context.Background(), func(ctx context.Context) error {
			<-ctx.Done()
			return ctx.Err()
		}))
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		start := time.Now()
		err = p.Shutdown(ctx)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, 30*time.Second, time.Since(start), "Shutdown returns exactly at its deadline")
		synctest.Wait()
		assert.Equal(t, uint64(1), p.Stats().Abandoned)
	})
}

func TestShutdownHandsOffALargeQueueWithinItsDeadline(t *testing.T) {
	// 20,000 Jobs behind a task that holds the only worker until the
	// deadline, and a store that takes 1s for them: a fixed fifth of the
	// grace (400ms) would lose most of them, so the hand-off starts as
	// early as the queue needs.
	const n = 20_000
	s := &store{perCall: time.Millisecond, perJob: 50 * time.Microsecond}
	p := drainingPool(t, n, 0, bgpool.WithHandoff(s), quietLogger())
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := p.Shutdown(ctx)
	elapsed := time.Since(start)
	var se *bgpool.ShutdownError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, n, se.HandedOff, "%v", err)
	assert.Equal(t, 1, se.Running, "the task that held the worker")
	assert.Equal(t, n, s.stored())
	st := p.Stats()
	assert.Equal(t, uint64(n), st.HandedOff)
	assert.Equal(t, uint64(1), st.Abandoned)
	assertBalanced(t, st)
	assert.Less(t, elapsed, 2100*time.Millisecond, "Shutdown returns by its deadline")
	s.mu.Lock()
	defer s.mu.Unlock()
	assert.Greater(t, len(s.calls), 1, "in bounded batches")
	for _, c := range s.calls {
		assert.LessOrEqual(t, c, 5000)
	}
}

func TestShutdownHandOffLosesOnlyTheJobTheStoreRefuses(t *testing.T) {
	// In a bubble: the hand-off runs in the last fifth of the grace period,
	// and on a loaded machine real time could end it before the store answers.
	synctest.Test(t, func(t *testing.T) {
		s := &store{}
		var reported []error
		var mu sync.Mutex
		p := drainingPool(t, 0, 0, bgpool.WithQueueSize(60), bgpool.WithHandoff(s),
			bgpool.WithErrorHandler(func(_ context.Context, err error) { mu.Lock(); reported = append(reported, err); mu.Unlock() }))
		good := bgpool.NewJob(func(context.Context, mailArgs) error { return nil })
		bad := bgpool.NewJob(func(context.Context, badArgs) error { return nil })
		for i := range 50 {
			if i == 20 {
				require.NoError(t, bad.Submit(context.Background(), p, badArgs{}))
				continue
			}
			require.NoError(t, good.Submit(context.Background(), p, mailArgs{To: fmt.Sprint(i)}))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		err := p.Shutdown(ctx)
		var se *bgpool.ShutdownError
		require.ErrorAs(t, err, &se)
		assert.Equal(t, 49, se.HandedOff)
		assert.Equal(t, 49, s.stored())
		st := p.Stats()
		assert.Equal(t, uint64(49), st.HandedOff)
		assert.Equal(t, uint64(2), st.Abandoned, "the refused Job and the running task")
		assertBalanced(t, st)
		mu.Lock()
		defer mu.Unlock()
		require.Len(t, reported, 1)
		assert.ErrorContains(t, reported[0], "refused 1 job")
		var je *bgpool.JobError
		require.ErrorAs(t, reported[0], &je)
		assert.Equal(t, 20, je.Index)
	})
}

func TestShutdownHandOffNeverExtendsPastTheDeadline(t *testing.T) {
	// A store that never answers in time, 64 queued Jobs, a deadline of
	// 2ms: Shutdown returns at its deadline, not 5s later.
	for range 5 {
		s := &store{perCall: time.Hour}
		p := drainingPool(t, 64, 0, bgpool.WithHandoff(s), quietLogger())
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Millisecond)
		err := p.Shutdown(ctx)
		cancel()
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Less(t, time.Since(start), 500*time.Millisecond)
		st := waitStats(t, p, func(s bgpool.Stats) bool { return s.Queued == 0 })
		assert.Equal(t, uint64(65), st.Abandoned)
		assertBalanced(t, st)
	}
}

func TestShutdownIsNotHeldByABlockingErrorHandlerOnAFailedHandOff(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	var called atomic.Bool
	h := &recordingHandoff{err: errors.New("store down")}
	p := drainingPool(t, 5, 0, bgpool.WithHandoff(h), bgpool.WithErrorHandler(func(context.Context, error) {
		called.Store(true)
		<-block
	}))
	start := time.Now()
	err := shutdownWithin(t, p, 200*time.Millisecond, 2*time.Second)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), time.Second)
	assert.Eventually(t, called.Load, time.Second, time.Millisecond, "the failure still reaches the error handler")
}

func TestShutdownReportsAHandOffWithoutAnAnswerAsUnknown(t *testing.T) {
	// The store commits, but its answer comes after the deadline, as an
	// error: what a database driver does when the commit's reply arrives
	// after the context ended.
	s := &lateStore{delay: 300 * time.Millisecond}
	var reported atomic.Value
	p := drainingPool(t, 10, 0, bgpool.WithHandoff(s),
		bgpool.WithErrorHandler(func(_ context.Context, err error) { reported.Store(err) }))
	ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
	defer cancel()
	err := p.Shutdown(ctx)
	var se *bgpool.ShutdownError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, 10, se.Pending, "the Jobs in the call under way: %v", err)
	assert.ErrorContains(t, err, "10 jobs still with the Handoff")
	assert.Eventually(t, func() bool { return reported.Load() != nil }, 2*time.Second, time.Millisecond)
	assert.ErrorContains(t, reported.Load().(error), "the store may have them")
	st := waitStats(t, p, func(s bgpool.Stats) bool { return s.Queued == 0 })
	assertBalanced(t, st)
}

// lateStore stores every job after delay, whatever its ctx, and then
// returns ctx's error if it has ended.
type lateStore struct {
	delay time.Duration
	rows  atomic.Int64
}

func (s *lateStore) Handoff(ctx context.Context, jobs []bgpool.JobArgs) error {
	time.Sleep(s.delay)
	s.rows.Add(int64(len(jobs)))
	return ctx.Err()
}

func TestShutdownErrorCountsReadWithoutParsing(t *testing.T) {
	p := newPool(t, 1, bgpool.WithQueueSize(2))
	release := occupy(t, p, 1)
	defer release()
	require.NoError(t, p.Submit(context.Background(), noop))
	err := shutdownWithin(t, p, 10*time.Millisecond, 2*time.Second)
	var se *bgpool.ShutdownError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, bgpool.ShutdownError{Queued: 1, Running: 1, Err: context.DeadlineExceeded}, *se)
	assert.EqualError(t, err, "bgpool: shutdown: abandoned 2 tasks (1 queued, 1 running): context deadline exceeded")
}

// callerRunsPool returns a pool of one worker without a queue whose policy
// is CallerRuns, with only a caller-run task left running: task, on a
// goroutine whose Submit result arrives on submitted. started is closed by
// task when it starts.
func callerRunsPool(t *testing.T, started <-chan struct{}, task bgpool.Task) (p *bgpool.Pool, submitted <-chan error) {
	t.Helper()
	p = newPool(t, 1, bgpool.WithQueueSize(0), bgpool.WithPolicy(bgpool.CallerRuns), quietLogger())
	release := occupy(t, p, 1)
	result := make(chan error, 1)
	go func() { result <- p.Submit(context.Background(), task) }()
	receive(t, started, 2*time.Second, "the caller-run task did not start")
	release()
	// The holding task is done; only the caller-run task is left, and it
	// counts as Running.
	waitStats(t, p, func(s bgpool.Stats) bool { return s.Completed == 1 && s.Running == 1 && s.Queued == 0 })
	return p, result
}

// Shutdown waits for a task that CallerRuns runs on its submitter, its
// deadline cancels and abandons such a task, and Overflow.Run called after
// Shutdown began returns ErrClosed without running the task.
func TestShutdownAccountsForCallerRunTasks(t *testing.T) {
	t.Run("Shutdown waits for a caller-run task", func(t *testing.T) {
		started, finish := make(chan struct{}), make(chan struct{})
		var once sync.Once
		unblock := func() { once.Do(func() { close(finish) }) }
		t.Cleanup(unblock)
		p, submitted := callerRunsPool(t, started, func(context.Context) error {
			close(started)
			<-finish
			return nil
		})

		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		done := shutdownAsync(ctx, p)
		select {
		case err := <-done: // the defect: it did not wait
			t.Fatalf("Shutdown returned %v while a caller-run task was running", err)
		case <-time.After(100 * time.Millisecond): // still waiting, as it should
		}
		unblock()
		assert.NoError(t, receive(t, done, 3*time.Second, "Shutdown did not return"))
		assert.Equal(t, uint64(2), p.Stats().Completed, "Shutdown returned before the caller-run task was counted")
		assert.NoError(t, receive(t, submitted, 2*time.Second, "Submit did not return"))
	})

	t.Run("Shutdown's deadline abandons a caller-run task", func(t *testing.T) {
		started, cancelled, testDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
		t.Cleanup(func() { close(testDone) })
		p, submitted := callerRunsPool(t, started, func(ctx context.Context) error {
			close(started)
			select {
			case <-ctx.Done(): // Shutdown's deadline passed
				close(cancelled)
				return ctx.Err()
			case <-testDone: // the defect: nothing cancelled it
				return nil
			}
		})

		err := shutdownWithin(t, p, 100*time.Millisecond, 2*time.Second)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		receive(t, cancelled, 2*time.Second, "the caller-run task's context was not cancelled")
		receive(t, submitted, 2*time.Second, "Submit did not return")
		s := p.Stats()
		assert.Equal(t, uint64(1), s.Abandoned)
		assert.Equal(t, uint64(1), s.Completed, "only the holding task completed")
		assert.Equal(t, uint64(0), s.Failed)
	})

	t.Run("Overflow.Run after Shutdown began returns ErrClosed", func(t *testing.T) {
		inPolicy := make(chan struct{})
		runErr := make(chan error, 1)
		var ran atomic.Bool
		p := newPool(t, 1, bgpool.WithQueueSize(0), bgpool.WithPolicy(bgpool.PolicyFunc(
			func(ctx context.Context, o *bgpool.Overflow) error {
				close(inPolicy)
				if err := o.Wait(ctx); !errors.Is(err, bgpool.ErrClosed) {
					runErr <- fmt.Errorf("Wait returned %v, want ErrClosed", err)
					return err
				}
				err := o.Run() // Shutdown has begun
				runErr <- err
				return err
			})))
		release := occupy(t, p, 1)
		submitted := make(chan error, 1)
		go func() {
			submitted <- p.Submit(context.Background(), func(context.Context) error {
				ran.Store(true)
				return nil
			})
		}()
		receive(t, inPolicy, 2*time.Second, "the policy was not called")

		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		done := shutdownAsync(ctx, p)
		assert.ErrorIs(t, receive(t, runErr, 2*time.Second, "Overflow.Run did not return"), bgpool.ErrClosed)
		assert.ErrorIs(t, receive(t, submitted, 2*time.Second, "Submit did not return"), bgpool.ErrClosed)
		release()
		assert.NoError(t, receive(t, done, 3*time.Second, "Shutdown did not return"))
		assert.False(t, ran.Load(), "the task ran after Shutdown began")
		s := p.Stats()
		assert.Equal(t, uint64(1), s.Rejected)
		assertBalanced(t, s)
	})
}

// Shutdown with a context that is already done returns nil when nothing is
// left to drain, whether the pool never ran a task or its workers parked;
// so does Serve with no grace, with or without a completed request.
func TestShutdownWithADoneContextReturnsNilOnAnIdlePool(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()

	t.Run("Shutdown returns nil on a pool that never ran a task", func(t *testing.T) {
		p := newPool(t, 2)
		assert.NoError(t, receive(t, shutdownAsync(cancelled, p), 2*time.Second, "Shutdown did not return"))
	})

	t.Run("Shutdown returns nil on a pool whose workers parked", func(t *testing.T) {
		p := newPool(t, 2)
		for range 3 {
			require.NoError(t, p.Submit(context.Background(), noop))
		}
		waitStats(t, p, idleWith(3))
		assert.NoError(t, receive(t, shutdownAsync(cancelled, p), 2*time.Second, "Shutdown did not return"))
	})

	t.Run("Serve with no grace returns nil when it got no request", func(t *testing.T) {
		p := newPool(t, 1)
		assert.NoError(t, serveAndStop(t, &http.Server{}, p, nil))
	})

	t.Run("Serve with no grace returns nil after a completed request", func(t *testing.T) {
		p := newPool(t, 1)
		connClosed := make(chan struct{}, 1)
		srv := &http.Server{
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ran := make(chan struct{})
				if err := p.Submit(r.Context(), func(context.Context) error {
					close(ran)
					return nil
				}); err != nil {
					http.Error(w, err.Error(), http.StatusInternalServerError)
					return
				}
				<-ran
				w.WriteHeader(http.StatusNoContent)
			}),
			ConnState: func(_ net.Conn, state http.ConnState) {
				if state == http.StateClosed {
					connClosed <- struct{}{}
				}
			},
		}
		assert.NoError(t, serveAndStop(t, srv, p, func(addr string) {
			client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			resp, err := client.Get("http://" + addr)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, http.StatusNoContent, resp.StatusCode)
			receive(t, connClosed, 2*time.Second, "the server did not close the connection")
			waitStats(t, p, idleWith(1))
		}))
	})
}

// serveAndStop runs bgpool.Serve with no grace on a new loopback listener,
// calls use (if not nil) with the listener's address, ends Serve's ctx, and
// returns what Serve returned.
func serveAndStop(t *testing.T, srv *http.Server, p *bgpool.Pool, use func(addr string)) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	result := make(chan error, 1)
	go func() { result <- bgpool.Serve(ctx, srv, ln, p, 0) }()
	t.Cleanup(cancel)
	if use != nil {
		use(ln.Addr().String())
	}
	cancel()
	return receive(t, result, 2*time.Second, "Serve did not return")
}

// An observer that blocks on the events of abandoned tasks does not hold
// Shutdown past its deadline.
func TestShutdownKeepsItsDeadlineWhenAnObserverBlocksOnAbandonedTasks(t *testing.T) {
	unblockObserver := make(chan struct{})
	p := newPool(t, 1, bgpool.WithQueueSize(5), bgpool.WithObserver(func(ev bgpool.TaskEvent) {
		if ev.Outcome == bgpool.OutcomeAbandoned {
			<-unblockObserver
		}
	}))
	t.Cleanup(func() { close(unblockObserver) })
	occupy(t, p, 1)
	for range 5 {
		require.NoError(t, p.TrySubmit(context.Background(), noop))
	}

	err := shutdownWithin(t, p, 100*time.Millisecond, time.Second)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

// An observer that blocks on the last task's Completed event, after the
// task was counted, does not hold Shutdown: Shutdown with a 100ms deadline
// gives up on the worker the observer holds and returns, within a second of
// its deadline, an error that matches context.DeadlineExceeded; the task
// stays Completed, not Abandoned.
func TestShutdownReturnsWhileAnObserverBlocksOnTheLastTask(t *testing.T) {
	entered, unblock := make(chan struct{}, 1), make(chan struct{})
	p := newPool(t, 1, bgpool.WithObserver(func(ev bgpool.TaskEvent) {
		if ev.Outcome == bgpool.OutcomeCompleted {
			entered <- struct{}{}
			<-unblock
		}
	}))
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(unblock) }) }) // runs before the pool's cleanup

	require.NoError(t, p.Submit(context.Background(), noop))
	receive(t, entered, 2*time.Second, "the observer was not called")

	// The observer holds the worker until the test's cleanup: a Shutdown
	// that waited for it would not return within a second of its deadline
	// (it may take releaseMargin, 100ms, beyond it for the worker).
	const deadline = 100 * time.Millisecond
	start := time.Now()
	err := shutdownWithin(t, p, deadline, deadline+time.Second)
	t.Logf("Shutdown returned %v after %v", err, time.Since(start))
	assert.ErrorIs(t, err, context.DeadlineExceeded, "Shutdown gave up on the worker at its deadline")
	s := p.Stats()
	assert.Equal(t, uint64(1), s.Completed, "the task was counted before its observer was called: %+v", s)
	assert.Zero(t, s.Abandoned, "%+v", s)
}

// A running task that honours its context but returns only after
// Shutdown's deadline (cancelling its 20,000 child contexts takes a while)
// counts Abandoned, not Failed, and Shutdown's error says so.
func TestShutdownAbandonsARunningTaskThatReturnsAfterItsDeadline(t *testing.T) {
	p := newPool(t, 1, quietLogger())
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

// Shutdown called from an observer returns by its deadline. The test runs
// in a child process, so that a Shutdown that never returns fails it
// instead of hanging the suite.
func TestShutdownFromAnObserverReturnsByItsDeadline(t *testing.T) {
	if os.Getenv("BGPOOL_TEST_CHILD") == "observer-shutdown" {
		observerShutdownChild()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestShutdownFromAnObserverReturnsByItsDeadline$")
	cmd.Env = append(os.Environ(), "BGPOOL_TEST_CHILD=observer-shutdown")
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
