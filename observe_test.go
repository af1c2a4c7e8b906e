package bgpool_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgpool/bgpool"
)

// recorder collects TaskEvents.
type recorder struct {
	mu     sync.Mutex
	events []bgpool.TaskEvent
}

func (r *recorder) observe(ev bgpool.TaskEvent) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
}

func (r *recorder) byOutcome() map[bgpool.Outcome][]bgpool.TaskEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := map[bgpool.Outcome][]bgpool.TaskEvent{}
	for _, ev := range r.events {
		m[ev.Outcome] = append(m[ev.Outcome], ev)
	}
	return m
}

func TestObserverSeesEveryOutcomeWithTimings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var rec recorder
		p, err := bgpool.New(1, bgpool.WithQueueSize(2), bgpool.WithPolicy(bgpool.Reject),
			bgpool.WithMaxQueueWait(10*time.Second), bgpool.WithObserver(rec.observe),
			bgpool.WithErrorHandler(func(context.Context, error) {}))
		require.NoError(t, err)
		bg := context.Background()
		fail := errors.New("fail")

		// Completed after 1s in the queue and 2s of running.
		release := make(chan struct{})
		require.NoError(t, p.Submit(bg, func(context.Context) error { <-release; return nil }))
		require.NoError(t, p.Submit(bg, func(context.Context) error { time.Sleep(2 * time.Second); return nil }))
		require.NoError(t, p.Submit(bg, func(context.Context) error { return fail }))
		assert.ErrorIs(t, p.Submit(bg, noop), bgpool.ErrOverloaded) // rejected
		time.Sleep(time.Second)
		close(release)
		synctest.Wait()
		time.Sleep(3 * time.Second)
		synctest.Wait()

		// Panicked, then expired after waiting longer than 10s.
		require.NoError(t, p.Submit(bg, func(context.Context) error { panic("p") }))
		synctest.Wait()
		hold := make(chan struct{})
		require.NoError(t, p.Submit(bg, func(context.Context) error { <-hold; return nil }))
		require.NoError(t, p.Submit(bg, noop))
		time.Sleep(11 * time.Second)
		close(hold)
		synctest.Wait()

		// Abandoned: a task that outlives the shutdown deadline.
		require.NoError(t, p.Submit(bg, func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }))
		synctest.Wait()
		ctx, cancel := context.WithTimeout(bg, time.Second)
		defer cancel()
		assert.Error(t, p.Shutdown(ctx))
		synctest.Wait()
		assert.ErrorIs(t, p.Submit(bg, noop), bgpool.ErrClosed)

		got := rec.byOutcome()
		require.Len(t, got[bgpool.OutcomeCompleted], 3)
		second := got[bgpool.OutcomeCompleted][1]
		assert.Equal(t, time.Second, second.QueueWait, "queue wait of the 2s task")
		assert.Equal(t, 2*time.Second, second.RunTime)
		require.Len(t, got[bgpool.OutcomeFailed], 1)
		assert.ErrorIs(t, got[bgpool.OutcomeFailed][0].Err, fail)
		require.Len(t, got[bgpool.OutcomePanicked], 1)
		var pe *bgpool.PanicError
		assert.ErrorAs(t, got[bgpool.OutcomePanicked][0].Err, &pe)
		require.Len(t, got[bgpool.OutcomeExpired], 1)
		assert.Equal(t, 11*time.Second, got[bgpool.OutcomeExpired][0].QueueWait)
		require.Len(t, got[bgpool.OutcomeRejected], 2)
		assert.ErrorIs(t, got[bgpool.OutcomeRejected][0].Err, bgpool.ErrOverloaded)
		assert.ErrorIs(t, got[bgpool.OutcomeRejected][1].Err, bgpool.ErrClosed)
		require.Len(t, got[bgpool.OutcomeAbandoned], 1)
		for out, events := range got {
			for _, ev := range events {
				ran := out == bgpool.OutcomeCompleted || out == bgpool.OutcomeFailed ||
					out == bgpool.OutcomePanicked || out == bgpool.OutcomeAbandoned
				assert.Equal(t, ran, ev.Started, "%v: Started", out)
				assert.Equal(t, out != bgpool.OutcomeRejected, ev.Queued, "%v: Queued", out)
			}
		}

		s := p.Stats()
		rec.mu.Lock()
		assert.Equal(t, int(s.Submitted), len(rec.events), "one event per task")
		rec.mu.Unlock()
	})
}

func TestObserverSeesDropsAndCallerRuns(t *testing.T) {
	for _, tt := range []struct {
		policy bgpool.Policy
		want   bgpool.Outcome
	}{
		{bgpool.Drop, bgpool.OutcomeDropped},
		{bgpool.DropOldest, bgpool.OutcomeDropped},
		{bgpool.CallerRuns, bgpool.OutcomeCompleted},
	} {
		t.Run(tt.want.String(), func(t *testing.T) {
			var rec recorder
			p := newPool(t, 1, bgpool.WithQueueSize(0), bgpool.WithPolicy(tt.policy), bgpool.WithObserver(rec.observe))
			release := occupy(t, p, 1)
			require.NoError(t, p.Submit(context.Background(), noop))
			got := rec.byOutcome()
			require.Len(t, got[tt.want], 1)
			ev := got[tt.want][0]
			assert.False(t, ev.Queued, "a task dropped on arrival or run by its caller never queued")
			assert.Equal(t, tt.want == bgpool.OutcomeCompleted, ev.Started)
			release()
		})
	}
}

func TestOutcomeString(t *testing.T) {
	assert.Equal(t, "completed", bgpool.OutcomeCompleted.String())
	assert.Equal(t, "abandoned", bgpool.OutcomeAbandoned.String())
	assert.Equal(t, "unknown", bgpool.Outcome(0).String())
	assert.Equal(t, "unknown", bgpool.Outcome(200).String())
}

func TestEveryObserverHearsEveryTaskEvenIfOnePanics(t *testing.T) {
	var first, second atomic.Int64
	p := newPool(t, 1, quietLogger(),
		bgpool.WithObserver(func(bgpool.TaskEvent) { first.Add(1); panic("first observer") }),
		bgpool.WithObserver(nil),
		bgpool.WithObserver(func(bgpool.TaskEvent) { second.Add(1) }),
	)
	for range 3 {
		require.NoError(t, p.Do(context.Background(), noop))
	}
	shutdown(t, p)
	assert.Equal(t, int64(3), first.Load())
	assert.Equal(t, int64(3), second.Load(), "the second observer hears every task, after the first panicked")
}

// An observer that panics is logged and stops nothing: every task runs,
// counts Completed, and Shutdown drains the pool by its deadline.
func TestPanickingObserverKeepsThePoolWorking(t *testing.T) {
	var logs syncBuffer
	var armed atomic.Bool // the cleanup disarms the observer: an unfixed Shutdown would panic on the test's goroutine
	armed.Store(true)
	p := newPool(t, 1,
		bgpool.WithObserver(func(bgpool.TaskEvent) {
			if armed.Load() {
				panic("boom")
			}
		}),
		bgpool.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	t.Cleanup(func() { armed.Store(false) })

	for i := range 3 {
		ran := make(chan struct{})
		require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
			close(ran)
			return nil
		}))
		receive(t, ran, 2*time.Second, fmt.Sprintf("task %d of 3 did not run", i+1))
	}
	assert.NoError(t, shutdownWithin(t, p, 2*time.Second, 3*time.Second))
	assert.Equal(t, uint64(3), p.Stats().Completed)
	assert.Contains(t, logs.String(), "observer panicked")
}

// An observer that calls runtime.Goexit (t.FailNow in a test's observer)
// after a task was counted Completed leaves the task counted once, and the
// pool still drains at Shutdown.
func TestObserverCallingGoexitLeavesTheTaskCountedOnce(t *testing.T) {
	var once sync.Once
	p := newPool(t, 1, quietLogger(), bgpool.WithObserver(func(bgpool.TaskEvent) {
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
