package bgpool_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgpool/bgpool"
)

// mailArgs are the args of the test Job.
type mailArgs struct{ To string }

func (mailArgs) Kind() string { return "mail" }

// recordingHandoff is a Handoff that records every call: the seam's own
// test double. The real engine is tested in contrib/river.
type recordingHandoff struct {
	mu        sync.Mutex
	calls     [][]bgpool.JobArgs
	at        []time.Time // when each call began
	deadlines []time.Time // each call's ctx deadline
	err       error       // returned by every call
}

func (h *recordingHandoff) Handoff(ctx context.Context, jobs []bgpool.JobArgs) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, append([]bgpool.JobArgs(nil), jobs...))
	h.at = append(h.at, time.Now())
	d, _ := ctx.Deadline()
	h.deadlines = append(h.deadlines, d)
	return h.err
}

func (h *recordingHandoff) jobs() []bgpool.JobArgs {
	h.mu.Lock()
	defer h.mu.Unlock()
	var all []bgpool.JobArgs
	for _, c := range h.calls {
		all = append(all, c...)
	}
	return all
}

func (h *recordingHandoff) callCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.calls)
}

func TestJobRunsInProcess(t *testing.T) {
	p, err := bgpool.New(2)
	require.NoError(t, err)
	defer p.Shutdown(context.Background())

	type ctxKey struct{}
	got := make(chan string, 3)
	job := bgpool.NewJob(func(ctx context.Context, a mailArgs) error {
		got <- a.To + "/" + ctx.Value(ctxKey{}).(string)
		return nil
	})
	ctx := context.WithValue(context.Background(), ctxKey{}, "v")

	t.Run("Submit runs the work with the args and the submitter's values", func(t *testing.T) {
		require.NoError(t, job.Submit(ctx, p, mailArgs{To: "a"}))
		assert.Equal(t, "a/v", <-got)
	})
	t.Run("Do runs the work and waits", func(t *testing.T) {
		require.NoError(t, job.Do(ctx, p, mailArgs{To: "b"}))
		assert.Equal(t, "b/v", <-got)
	})
	t.Run("Go submits to the request's pool", func(t *testing.T) {
		h := bgpool.Middleware(p)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := job.Go(r.WithContext(context.WithValue(r.Context(), ctxKey{}, "req")), mailArgs{To: "c"}); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
			}
		}))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		assert.Equal(t, "c/req", <-got)
	})
	t.Run("bad input is an error", func(t *testing.T) {
		assert.Error(t, job.Submit(ctx, nil, mailArgs{}))
		//lint:ignore SA1012 a nil context is the bad input under test
		assert.Error(t, job.Submit(nil, p, mailArgs{}))
		assert.Error(t, job.Go(nil, mailArgs{}))
		assert.ErrorIs(t, job.Go(httptest.NewRequest(http.MethodGet, "/", nil), mailArgs{}), bgpool.ErrNoPool)
		assert.Panics(t, func() { bgpool.NewJob[mailArgs](nil) })
	})
	t.Run("nil args are rejected and counted", func(t *testing.T) {
		nilJob := bgpool.NewJob(func(context.Context, bgpool.JobArgs) error { return nil })
		before := p.Stats().Rejected
		assert.ErrorContains(t, nilJob.Submit(ctx, p, nil), "nil args")
		assert.Equal(t, before+1, p.Stats().Rejected)
	})
}

func TestHandoffOptions(t *testing.T) {
	t.Run("Spill without a Handoff is an error", func(t *testing.T) {
		_, err := bgpool.New(1, bgpool.WithPolicy(bgpool.Spill))
		assert.ErrorContains(t, err, "Spill policy needs WithHandoff")
	})
	t.Run("a nil Handoff is an error", func(t *testing.T) {
		_, err := bgpool.New(1, bgpool.WithHandoff(nil))
		assert.Error(t, err)
		var typedNil *recordingHandoff
		_, err = bgpool.New(1, bgpool.WithHandoff(typedNil))
		assert.Error(t, err)
	})
	t.Run("the outcome has a name", func(t *testing.T) {
		assert.Equal(t, "handed_off", bgpool.OutcomeHandedOff.String())
	})
}

// fullPool returns a pool of one worker and a queue of one, with the
// worker blocked until release is closed and the queue full of a Job.
func fullPool(t *testing.T, release chan struct{}, opts ...bgpool.Option) (*bgpool.Pool, *bgpool.Job[mailArgs]) {
	t.Helper()
	p, err := bgpool.New(1, append([]bgpool.Option{bgpool.WithQueueSize(1)}, opts...)...)
	require.NoError(t, err)
	started := make(chan struct{})
	require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
		close(started)
		<-release
		return nil
	}))
	<-started
	job := bgpool.NewJob(func(context.Context, mailArgs) error { return nil })
	require.NoError(t, job.Submit(context.Background(), p, mailArgs{To: "queued"}))
	return p, job
}

func TestSpill(t *testing.T) {
	t.Run("hands off each Job that finds no room, and drops closures", func(t *testing.T) {
		h := &recordingHandoff{}
		var events sync.Map
		release := make(chan struct{})
		p, job := fullPool(t, release, bgpool.WithHandoff(h), bgpool.WithPolicy(bgpool.Spill),
			bgpool.WithObserver(func(ev bgpool.TaskEvent) { events.Store(ev.Outcome, true) }))
		for _, to := range []string{"x", "y", "z"} {
			require.NoError(t, job.Submit(context.Background(), p, mailArgs{To: to}))
		}
		require.NoError(t, p.Submit(context.Background(), func(context.Context) error { return nil }))

		s := p.Stats()
		assert.Equal(t, uint64(3), s.HandedOff, "handed off")
		assert.Equal(t, uint64(1), s.Dropped, "the closure is dropped")
		assertBalanced(t, s)
		assert.Equal(t, 3, h.callCount(), "one Handoff call per Job")
		assert.Equal(t, []bgpool.JobArgs{mailArgs{"x"}, mailArgs{"y"}, mailArgs{"z"}}, h.jobs())
		_, observed := events.Load(bgpool.OutcomeHandedOff)
		assert.True(t, observed, "the observer saw OutcomeHandedOff")

		close(release)
		require.NoError(t, p.Shutdown(context.Background()))
		s = p.Stats()
		assert.Equal(t, uint64(2), s.Completed, "the blocker and the queued Job ran")
		assertBalanced(t, s)
	})

	t.Run("a failed hand-off drops the Job and reports the error", func(t *testing.T) {
		h := &recordingHandoff{err: errors.New("store down")}
		var reported []error
		var mu sync.Mutex
		release := make(chan struct{})
		p, job := fullPool(t, release, bgpool.WithHandoff(h), bgpool.WithPolicy(bgpool.Spill),
			bgpool.WithErrorHandler(func(_ context.Context, err error) {
				mu.Lock()
				reported = append(reported, err)
				mu.Unlock()
			}))
		require.NoError(t, job.Submit(context.Background(), p, mailArgs{To: "x"}))
		s := p.Stats()
		assert.Equal(t, uint64(0), s.HandedOff)
		assert.Equal(t, uint64(1), s.Dropped)
		assertBalanced(t, s)
		mu.Lock()
		require.Len(t, reported, 1)
		assert.ErrorContains(t, reported[0], "store down")
		mu.Unlock()
		close(release)
		require.NoError(t, p.Shutdown(context.Background()))
	})

	t.Run("a Job run with Do is not handed off", func(t *testing.T) {
		h := &recordingHandoff{}
		release := make(chan struct{})
		p, job := fullPool(t, release, bgpool.WithHandoff(h), bgpool.WithPolicy(bgpool.Spill))
		assert.ErrorIs(t, job.Do(context.Background(), p, mailArgs{To: "x"}), bgpool.ErrDropped)
		assert.Zero(t, h.callCount())
		close(release)
		require.NoError(t, p.Shutdown(context.Background()))
	})

	t.Run("the Handoff gets the submitter's values, not its cancellation", func(t *testing.T) {
		h := &recordingHandoff{}
		release := make(chan struct{})
		p, job := fullPool(t, release, bgpool.WithHandoff(h), bgpool.WithPolicy(bgpool.Spill))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		require.NoError(t, job.Submit(ctx, p, mailArgs{To: "x"}))
		assert.Equal(t, uint64(1), p.Stats().HandedOff)
		require.Len(t, h.deadlines, 1)
		assert.WithinDuration(t, time.Now().Add(5*time.Second), h.deadlines[0], time.Second, "Spill's 5s timeout")
		close(release)
		require.NoError(t, p.Shutdown(context.Background()))
	})
}

// drainingPool returns a pool of one worker running a task that returns
// when its context is cancelled, with jobs Jobs and closures closures
// queued behind it.
func drainingPool(t *testing.T, jobs, closures int, opts ...bgpool.Option) *bgpool.Pool {
	t.Helper()
	p, err := bgpool.New(1, append([]bgpool.Option{bgpool.WithQueueSize(jobs + closures)}, opts...)...)
	require.NoError(t, err)
	started := make(chan struct{})
	require.NoError(t, p.Submit(context.Background(), func(ctx context.Context) error {
		close(started)
		<-ctx.Done()
		return ctx.Err()
	}))
	<-started
	job := bgpool.NewJob(func(context.Context, mailArgs) error { return nil })
	for i := range jobs {
		require.NoError(t, job.Submit(context.Background(), p, mailArgs{To: string(rune('a' + i%26))}))
	}
	for range closures {
		require.NoError(t, p.Submit(context.Background(), func(context.Context) error { return nil }))
	}
	return p
}

func TestShutdownHandsOffQueuedJobs(t *testing.T) {
	t.Run("hands off the queued Jobs in one batch within the reserve", func(t *testing.T) {
		h := &recordingHandoff{}
		p := drainingPool(t, 10, 2, bgpool.WithHandoff(h), bgpool.WithErrorHandler(func(context.Context, error) {}))
		const grace = time.Second
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), grace)
		defer cancel()
		deadline, _ := ctx.Deadline()
		err := p.Shutdown(ctx)
		elapsed := time.Since(start)

		require.Error(t, err)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.ErrorContains(t, err, "handed off 10 jobs")
		require.Equal(t, 1, h.callCount(), "one Handoff call")
		assert.Len(t, h.jobs(), 10)
		// The drain ends at the deadline less a fifth of the grace; the
		// hand-off's context ends at the deadline itself.
		assert.WithinDuration(t, start.Add(grace-grace/5), h.at[0], 100*time.Millisecond, "the hand-off began at deadline - reserve")
		assert.True(t, h.at[0].Before(deadline), "the hand-off began before the deadline")
		assert.Equal(t, deadline, h.deadlines[0], "the hand-off's context ends at Shutdown's deadline")
		// Running tasks keep their worker until the deadline: the hand-off
		// takes nothing from them.
		assert.Less(t, elapsed, grace+100*time.Millisecond, "Shutdown returned at its deadline")

		s := p.Stats()
		assert.Equal(t, uint64(10), s.HandedOff, "handed off")
		assert.Equal(t, uint64(3), s.Abandoned, "the running task and the two queued closures")
		assertBalanced(t, s)
	})

	t.Run("a failed hand-off abandons the Jobs and reports the error", func(t *testing.T) {
		h := &recordingHandoff{err: errors.New("store down")}
		var mu sync.Mutex
		var reported []error
		p := drainingPool(t, 5, 0, bgpool.WithHandoff(h), bgpool.WithErrorHandler(func(_ context.Context, err error) {
			mu.Lock()
			reported = append(reported, err)
			mu.Unlock()
		}))
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		require.Error(t, p.Shutdown(ctx))
		s := p.Stats()
		assert.Zero(t, s.HandedOff)
		assert.Equal(t, uint64(6), s.Abandoned, "the running task and the five Jobs")
		assertBalanced(t, s)
		mu.Lock()
		defer mu.Unlock()
		var found bool
		for _, err := range reported {
			if errors.Is(err, h.err) {
				found = true
				assert.ErrorContains(t, err, "hand-off of 5 jobs failed")
			}
		}
		assert.True(t, found, "the hand-off's error reached the error handler: %v", reported)
	})

	t.Run("queued closures are abandoned and never handed off", func(t *testing.T) {
		h := &recordingHandoff{}
		p := drainingPool(t, 0, 4, bgpool.WithHandoff(h), bgpool.WithErrorHandler(func(context.Context, error) {}))
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		require.Error(t, p.Shutdown(ctx))
		assert.Zero(t, h.callCount())
		s := p.Stats()
		assert.Equal(t, uint64(5), s.Abandoned)
		assertBalanced(t, s)
	})

	t.Run("without a Handoff queued Jobs are abandoned at the deadline itself", func(t *testing.T) {
		p := drainingPool(t, 3, 0, bgpool.WithErrorHandler(func(context.Context, error) {}))
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		require.Error(t, p.Shutdown(ctx))
		assert.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond, "no reserve without a Handoff")
		s := p.Stats()
		assert.Equal(t, uint64(4), s.Abandoned)
		assertBalanced(t, s)
	})

	t.Run("a drain that finishes hands off nothing", func(t *testing.T) {
		h := &recordingHandoff{}
		p, err := bgpool.New(2, bgpool.WithHandoff(h))
		require.NoError(t, err)
		job := bgpool.NewJob(func(context.Context, mailArgs) error { return nil })
		for range 10 {
			require.NoError(t, job.Submit(context.Background(), p, mailArgs{}))
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		require.NoError(t, p.Shutdown(ctx))
		assert.Zero(t, h.callCount())
		assert.Equal(t, uint64(10), p.Stats().Completed)
	})
}

func TestJobDoTakesBackAJobThatHasNotStartedWhenCtxEnds(t *testing.T) {
	p := newPool(t, 1, bgpool.WithQueueSize(4))
	release := occupy(t, p, 1)
	var ran atomic.Bool
	job := bgpool.NewJob(func(context.Context, mailArgs) error { ran.Store(true); return nil })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- job.Do(ctx, p, mailArgs{To: "ada"}) }()
	waitStats(t, p, func(s bgpool.Stats) bool { return s.Queued == 1 })
	cancel()
	assert.ErrorIs(t, receive(t, done, 10*time.Second, "Job.Do"), context.Canceled,
		"Do returns while the job is still queued")
	release()
	s := waitStats(t, p, func(s bgpool.Stats) bool { return s.Queued == 0 && s.Running == 0 })
	assert.False(t, ran.Load(), "the job taken back never runs")
	assert.Equal(t, uint64(1), s.Dropped, "it is counted Dropped when a worker reaches it")
	assertBalanced(t, s)
	assert.Equal(t, s.Ended(), s.Completed+s.Dropped, "every task completed or was dropped: %+v", s)
}

func TestJobDoCancelsARunningJobAndWaitsForItToReturn(t *testing.T) {
	p := newPool(t, 1)
	started, release := make(chan struct{}), make(chan struct{})
	var cause atomic.Value
	job := bgpool.NewJob(func(ctx context.Context, _ mailArgs) error {
		close(started)
		<-ctx.Done()
		cause.Store(context.Cause(ctx))
		<-release // the work takes its time to stop
		return ctx.Err()
	})
	why := errors.New("river stops the client")
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan error, 1)
	go func() { done <- job.Do(ctx, p, mailArgs{}) }()
	<-started
	cancel(why)
	select {
	case err := <-done:
		t.Fatalf("Job.Do returned %v while its work was still running", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	assert.ErrorIs(t, receive(t, done, 10*time.Second, "Job.Do"), context.Canceled)
	assert.Equal(t, why, cause.Load(), "the work's ctx is cancelled with the submitter's cause")
}

func TestJobDoWaitsForItsWorkPastShutdownsDeadline(t *testing.T) {
	p := newPool(t, 1, quietLogger())
	started, release := make(chan struct{}), make(chan struct{})
	job := bgpool.NewJob(func(context.Context, mailArgs) error {
		close(started)
		<-release // ignores its context
		return nil
	})
	done := make(chan error, 1)
	go func() { done <- job.Do(context.Background(), p, mailArgs{}) }()
	<-started
	err := shutdownWithin(t, p, time.Millisecond, 10*time.Second)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	select {
	case err := <-done:
		t.Fatalf("Job.Do returned %v at the abandonment while its work was still running", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	assert.NoError(t, receive(t, done, 10*time.Second, "Job.Do"))
}
