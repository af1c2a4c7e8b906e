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
	p := defectPool(t, 1, opts...)
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
			assert.True(t, balanced(s), "%+v", s)
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
	p := defectPool(t, 2, bgpool.WithQueueSize(4))
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
