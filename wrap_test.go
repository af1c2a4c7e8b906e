package bgpool_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgpool/bgpool"
)

type wrapKey struct{}

// wrapRecorder is a task wrapper that records what it was told and puts a
// value in the context the task sees.
type wrapRecorder struct {
	mu    sync.Mutex
	infos []bgpool.TaskInfo
	errs  []error
}

func (w *wrapRecorder) wrap(ctx context.Context, info bgpool.TaskInfo, run bgpool.Task) error {
	err := run(context.WithValue(ctx, wrapKey{}, "wrapped"))
	w.mu.Lock()
	w.infos = append(w.infos, info)
	w.errs = append(w.errs, err)
	w.mu.Unlock()
	return err
}

func TestTaskWrapperRunsEveryTaskAndSeesHowItEnded(t *testing.T) {
	var rec wrapRecorder
	var errs sync.Map
	p := newPool(t, 1,
		bgpool.WithTaskWrapper(rec.wrap),
		bgpool.WithErrorHandler(func(_ context.Context, err error) { errs.Store(err.Error(), true) }),
	)
	ctx := context.Background()

	var saw any
	require.NoError(t, p.Do(ctx, func(ctx context.Context) error {
		saw = ctx.Value(wrapKey{})
		return nil
	}))
	assert.Equal(t, "wrapped", saw, "the task runs with the context the wrapper passed")

	failure := errors.New("lookup failed")
	assert.ErrorIs(t, p.Do(ctx, func(context.Context) error { return failure }), failure)

	var pe *bgpool.PanicError
	require.ErrorAs(t, p.Do(ctx, func(context.Context) error { panic("boom") }), &pe)

	job := bgpool.NewJob(func(context.Context, mailArgs) error { return nil })
	require.NoError(t, job.Do(ctx, p, mailArgs{To: "ada"}))

	done := make(chan struct{})
	require.NoError(t, job.Submit(ctx, p, mailArgs{To: "bob"}))
	require.NoError(t, p.Submit(ctx, func(context.Context) error { close(done); return nil }))
	<-done
	shutdown(t, p)

	rec.mu.Lock()
	defer rec.mu.Unlock()
	require.Len(t, rec.infos, 6)
	assert.True(t, rec.infos[0].Awaited, "Do's task is awaited")
	assert.Equal(t, failure, rec.errs[1])
	var wrappedPanic *bgpool.PanicError
	require.ErrorAs(t, rec.errs[2], &wrappedPanic, "the wrapper sees a panic as a *PanicError")
	assert.Equal(t, "boom", wrappedPanic.Value)
	assert.Equal(t, bgpool.TaskInfo{Kind: "mail", Awaited: true, QueueWait: rec.infos[3].QueueWait}, rec.infos[3], "Job.Do")
	assert.Equal(t, "mail", rec.infos[4].Kind, "Job.Submit")
	assert.False(t, rec.infos[4].Awaited)
	assert.Equal(t, "", rec.infos[5].Kind, "a plain task")

	s := p.Stats()
	assert.Equal(t, uint64(4), s.Completed)
	assert.Equal(t, uint64(1), s.Failed)
	assert.Equal(t, uint64(1), s.Panicked, "a panic the wrapper returns is counted Panicked")
}

func TestTaskWrapperThatPanicsIsCountedPanicked(t *testing.T) {
	p := newPool(t, 1,
		bgpool.WithTaskWrapper(func(context.Context, bgpool.TaskInfo, bgpool.Task) error { panic("wrapper") }),
		quietLogger(),
	)
	var pe *bgpool.PanicError
	require.ErrorAs(t, p.Do(context.Background(), noop), &pe)
	shutdown(t, p)
	assert.Equal(t, uint64(1), p.Stats().Panicked)
}

func TestTaskWrapperSeesTheQueueWait(t *testing.T) {
	var rec wrapRecorder
	p := newPool(t, 1, bgpool.WithTaskWrapper(rec.wrap), bgpool.WithQueueSize(1))
	release := occupy(t, p, 1)
	done := make(chan struct{})
	require.NoError(t, p.Submit(context.Background(), func(context.Context) error { close(done); return nil }))
	waitStats(t, p, func(s bgpool.Stats) bool { return s.Queued == 1 })
	// The queued task waits at least as long as this takes.
	other := make(chan struct{})
	go func() { defer close(other); _ = p.Do(context.Background(), noop) }()
	release()
	<-done
	<-other
	shutdown(t, p)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	require.Len(t, rec.infos, 3)
	assert.Positive(t, rec.infos[1].QueueWait, "the task that waited in the queue")
}
