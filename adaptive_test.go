package bgpool_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgpool/bgpool"
)

// A backend is what the tasks of these tests call: slots calls served at
// once, each for service, the others waiting for a slot, so that a task's
// run time grows with how many run at once beyond the slots. Its slots can
// change while tasks call it.
type backend struct {
	service time.Duration
	slots   atomic.Pointer[chan struct{}]
}

func newBackend(slots int, service time.Duration) *backend {
	b := &backend{service: service}
	b.setSlots(slots)
	return b
}

// setSlots gives calls that begin from now on a new set of slots.
func (b *backend) setSlots(n int) {
	ch := make(chan struct{}, n)
	b.slots.Store(&ch)
}

// call is a task that calls the backend.
func (b *backend) call(ctx context.Context) error {
	slots := *b.slots.Load()
	select {
	case slots <- struct{}{}: // a slot
	case <-ctx.Done(): // the task's timeout
		return ctx.Err()
	}
	time.Sleep(b.service)
	<-slots
	return nil
}

// offer submits task to p every interval for d with TrySubmit (arrivals on
// a schedule, refusals ignored), and returns the highest and lowest cap it
// saw from settle on, and the cap at the end.
func offer(p *bgpool.Pool, every, d, settle time.Duration, task bgpool.Task) (lo, hi, last int) {
	lo = math.MaxInt
	start := time.Now()
	for time.Since(start) < d {
		_ = p.TrySubmit(context.Background(), task)
		if time.Since(start) >= settle {
			w := p.Stats().Workers
			lo, hi = min(lo, w), max(hi, w)
		}
		time.Sleep(every)
	}
	return lo, hi, p.Stats().Workers
}

func TestAdaptiveConcurrencyLowersTheCapWhenRunTimeRisesWithIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// 64 workers against 4 slots of 10ms (400 calls/s), offered 1,000
		// tasks/s: run time grows with every worker beyond the slots.
		b := newBackend(4, 10*time.Millisecond)
		p, err := bgpool.New(64, bgpool.WithAdaptiveConcurrency(1, 64), bgpool.WithQueueSize(64),
			bgpool.WithPolicy(bgpool.Reject))
		require.NoError(t, err)
		lo, hi, _ := offer(p, time.Millisecond, 2*time.Second, time.Second, b.call)
		assert.LessOrEqual(t, hi, 12, "the cap comes down to near the slots within a second")
		assert.GreaterOrEqual(t, lo, 4, "and does not fall below them")
		require.NoError(t, p.Shutdown(context.Background()))
		assertBalanced(t, p.Stats())
	})
}

func TestAdaptiveConcurrencyRaisesTheCapWhileRunTimeStaysFlat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Tasks of a flat 10ms, 2,000 a second: 20 at once are needed, and
		// run time does not grow with them.
		p, err := bgpool.New(2, bgpool.WithAdaptiveConcurrency(1, 64), bgpool.WithQueueSize(64),
			bgpool.WithPolicy(bgpool.Reject))
		require.NoError(t, err)
		flat := func(context.Context) error { time.Sleep(10 * time.Millisecond); return nil }
		lo, _, _ := offer(p, 500*time.Microsecond, 2*time.Second, time.Second, flat)
		assert.GreaterOrEqual(t, lo, 20, "the cap grows to what the tasks need within a second")
		require.NoError(t, p.Shutdown(context.Background()))
		assertBalanced(t, p.Stats())
	})
}

func TestAdaptiveConcurrencyKeepsTheCapNearWhatTheTasksUse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// 200 tasks/s of a flat 10ms use 2 workers: the cap of 256 comes
		// down, so that a later overload does not meet 256 at once.
		p, err := bgpool.New(256, bgpool.WithAdaptiveConcurrency(1, 256))
		require.NoError(t, err)
		flat := func(context.Context) error { time.Sleep(10 * time.Millisecond); return nil }
		_, hi, _ := offer(p, 5*time.Millisecond, time.Second, 500*time.Millisecond, flat)
		assert.LessOrEqual(t, hi, 16)
		require.NoError(t, p.Shutdown(context.Background()))
		assert.Zero(t, p.Stats().Dropped)
	})
}

func TestAdaptiveConcurrencyIgnoresTasksThatNeverRan(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// As in the test above, with a 2ms queue wait: more tasks expire
		// unrun than run. Read as runs of no time, they would skew the
		// run times, and the cap would leave the slots idle.
		b := newBackend(4, 10*time.Millisecond)
		p, err := bgpool.New(64, bgpool.WithAdaptiveConcurrency(1, 64), bgpool.WithQueueSize(64),
			bgpool.WithMaxQueueWait(2*time.Millisecond), bgpool.WithPolicy(bgpool.Reject))
		require.NoError(t, err)
		lo, hi, _ := offer(p, time.Millisecond, 2*time.Second, time.Second, b.call)
		assert.LessOrEqual(t, hi, 12)
		assert.GreaterOrEqual(t, lo, 4, "the cap keeps the slots busy")
		require.NoError(t, p.Shutdown(context.Background()))
		s := p.Stats()
		assert.GreaterOrEqual(t, s.Completed, uint64(750), "nearly the 800 calls the backend serves in 2s")
		assert.Greater(t, s.Expired, s.Completed, "most tasks expired")
		assert.Equal(t, s.Expired, s.Dropped)
		assertBalanced(t, s)
	})
}

func TestAdaptiveConcurrencyHoldsItsMinimum(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// One slot: the rule would settle near 3; the minimum is 5.
		b := newBackend(1, 10*time.Millisecond)
		p, err := bgpool.New(16, bgpool.WithAdaptiveConcurrency(5, 16), bgpool.WithQueueSize(16),
			bgpool.WithPolicy(bgpool.Reject))
		require.NoError(t, err)
		lo, _, last := offer(p, 2*time.Millisecond, 2*time.Second, 0, b.call)
		assert.Equal(t, 5, lo)
		assert.Equal(t, 5, last)
		require.NoError(t, p.Shutdown(context.Background()))
	})
}

func TestAdaptiveConcurrencyClimbsBackWhenTheOverloadEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBackend(2, 10*time.Millisecond)
		p, err := bgpool.New(64, bgpool.WithAdaptiveConcurrency(1, 64), bgpool.WithQueueSize(64),
			bgpool.WithPolicy(bgpool.Reject))
		require.NoError(t, err)
		_, hi, _ := offer(p, time.Millisecond, 2*time.Second, time.Second, b.call)
		assert.LessOrEqual(t, hi, 6, "overloaded, the cap is near the 2 slots")
		// The backend gets 32 slots: 2,000 tasks/s need 20 at once.
		b.setSlots(32)
		_, _, last := offer(p, 500*time.Microsecond, 5*time.Second, 0, b.call)
		assert.GreaterOrEqual(t, last, 20, "the cap climbs back within 5s")
		require.NoError(t, p.Shutdown(context.Background()))
	})
}

func TestAdaptiveConcurrencyStartsFromNewsSizeClamped(t *testing.T) {
	for _, c := range []struct{ size, min, max, want int }{
		{100, 1, 10, 10},
		{1, 4, 10, 4},
		{6, 4, 10, 6},
	} {
		p := newPool(t, c.size, bgpool.WithAdaptiveConcurrency(c.min, c.max))
		assert.Equal(t, c.want, p.Stats().Workers, "New(%d) with bounds [%d, %d]", c.size, c.min, c.max)
	}
}

func TestTuneSetsTheAdaptiveCapWithinItsBounds(t *testing.T) {
	p := newPool(t, 8, bgpool.WithAdaptiveConcurrency(3, 16))
	p.Tune(100)
	assert.Equal(t, 16, p.Stats().Workers)
	p.Tune(1)
	assert.Equal(t, 3, p.Stats().Workers)
	p.Tune(0)
	assert.Equal(t, 3, p.Stats().Workers, "a size below 1 is ignored")
	p.Tune(10)
	assert.Equal(t, 10, p.Stats().Workers)
}

func TestAdaptiveConcurrencyRefusesInvalidBounds(t *testing.T) {
	for _, c := range []struct{ min, max int }{
		{0, 8}, {-1, 8}, {5, 4}, {1, 0},
	} {
		_, err := bgpool.New(8, bgpool.WithAdaptiveConcurrency(c.min, c.max))
		assert.ErrorContains(t, err, "WithAdaptiveConcurrency", "bounds [%d, %d]", c.min, c.max)
	}
	if math.MaxInt > bgpool.MaxWorkers {
		_, err := bgpool.New(8, bgpool.WithAdaptiveConcurrency(1, bgpool.MaxWorkers+1))
		assert.ErrorContains(t, err, "WithAdaptiveConcurrency")
	}
}

func TestTaskEventsCarryTheCap(t *testing.T) {
	events := make(chan bgpool.TaskEvent, 2)
	p := newPool(t, 3, bgpool.WithObserver(func(ev bgpool.TaskEvent) { events <- ev }))
	require.NoError(t, p.Do(context.Background(), noop))
	assert.Equal(t, 3, receive(t, events, 5*time.Second, "an event").Workers)
	p.Tune(5)
	require.NoError(t, p.Do(context.Background(), noop))
	assert.Equal(t, 5, receive(t, events, 5*time.Second, "an event").Workers)
}

func TestQueueDelayTargetLetsABurstDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// 20 tasks of 10ms at once on 4 workers drain in 50ms, within
		// the 100ms interval: WithMaxQueueWait(5ms) would drop 16.
		p, err := bgpool.New(4, bgpool.WithQueueDelayTarget(5*time.Millisecond), bgpool.WithQueueSize(32))
		require.NoError(t, err)
		for range 20 {
			require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
				time.Sleep(10 * time.Millisecond)
				return nil
			}))
		}
		time.Sleep(20 * time.Millisecond)
		assert.GreaterOrEqual(t, p.Stats().QueueDelay, 10*time.Millisecond, "the queue's delay while the burst drains")
		require.NoError(t, p.Shutdown(context.Background()))
		s := p.Stats()
		assert.Equal(t, uint64(20), s.Completed)
		assert.Zero(t, s.Dropped)
		assert.Zero(t, s.QueueDelay, "zero once the queue is empty")
	})
}

func TestQueueDelayTargetDropsAtTheHeadOfAStandingQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// One worker serves 100 tasks/s; 200 a second arrive for a
		// second: a standing queue.
		const target = 5 * time.Millisecond
		var mu sync.Mutex
		var events []bgpool.TaskEvent
		p, err := bgpool.New(1, bgpool.WithQueueDelayTarget(target), bgpool.WithQueueSize(1000),
			bgpool.WithObserver(func(ev bgpool.TaskEvent) {
				mu.Lock()
				events = append(events, ev)
				mu.Unlock()
			}))
		require.NoError(t, err)
		slow := func(context.Context) error { time.Sleep(10 * time.Millisecond); return nil }
		var wg sync.WaitGroup
		var droppedDo atomic.Int64
		var delay time.Duration // the highest QueueDelay seen
		start := time.Now()
		for i := 0; time.Since(start) < time.Second; i++ {
			delay = max(delay, p.Stats().QueueDelay)
			if i%10 == 0 { // some callers wait for their task
				wg.Go(func() {
					if err := p.Do(context.Background(), slow); errors.Is(err, bgpool.ErrDropped) {
						droppedDo.Add(1)
					}
				})
			} else {
				require.NoError(t, p.Submit(context.Background(), slow))
			}
			time.Sleep(5 * time.Millisecond)
		}
		wg.Wait()
		mu.Lock()
		beforeShutdown := len(events) // the drain drops nothing: its tasks may have waited longer
		mu.Unlock()
		require.NoError(t, p.Shutdown(context.Background()))
		s := p.Stats()
		assert.Positive(t, s.Delayed)
		assert.Equal(t, s.Delayed, s.Dropped, "counted Dropped, as Delayed")
		assert.Positive(t, droppedDo.Load(), "Do reports ErrDropped")
		assert.Greater(t, delay, target, "Stats shows the standing queue's delay")
		assertBalanced(t, s)
		// Before the first drop, tasks waited up to the target plus the
		// interval; from then on every task that ran had waited at most
		// the target (the rest were dropped).
		mu.Lock()
		defer mu.Unlock()
		first := -1
		for i, ev := range events {
			if ev.Outcome == bgpool.OutcomeExpired {
				first = i
				break
			}
		}
		require.GreaterOrEqual(t, first, 0, "an OutcomeExpired event")
		for _, ev := range events[:first] {
			assert.LessOrEqual(t, ev.QueueWait, target+100*time.Millisecond)
		}
		require.Less(t, first, beforeShutdown, "the first drop came before Shutdown")
		for _, ev := range events[first:beforeShutdown] {
			if ev.Started {
				assert.LessOrEqual(t, ev.QueueWait, target, "ran after the first drop")
			}
		}
	})
}

func TestQueueDelayTargetRefusesANegativeTarget(t *testing.T) {
	_, err := bgpool.New(1, bgpool.WithQueueDelayTarget(-time.Millisecond))
	assert.ErrorContains(t, err, "WithQueueDelayTarget")
}

func TestQueueDelayTargetDropsNothingWhileShutdownDrains(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// 50 tasks of 10ms queued on one worker: a standing queue for
		// 500ms. Shutdown's drain runs them all; its deadline, not the
		// delay target, decides what is too late.
		p, err := bgpool.New(1, bgpool.WithQueueDelayTarget(5*time.Millisecond), bgpool.WithQueueSize(64))
		require.NoError(t, err)
		for range 50 {
			require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
				time.Sleep(10 * time.Millisecond)
				return nil
			}))
		}
		require.NoError(t, p.Shutdown(context.Background()))
		s := p.Stats()
		assert.Equal(t, uint64(50), s.Completed)
		assert.Zero(t, s.Dropped)
	})
}

func TestQueueDelayTargetDropsAStandingQueueOfShortTasks(t *testing.T) {
	// Tasks of 20µs, shorter than what the controller times every time:
	// the worker reads the clock for one task in 16 and judges the others
	// by its last reading. A queue that stands must still be dropped at its
	// head, and a task that runs after the drops began must not have waited
	// much more than the target: at most the target plus the run time of
	// the 16 tasks that the reading lags behind by.
	for _, adaptive := range []bool{false, true} {
		t.Run(fmt.Sprint("adaptive concurrency ", adaptive), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const target, service, every = 5 * time.Millisecond, 20 * time.Microsecond, 10 * time.Microsecond
				opts := []bgpool.Option{bgpool.WithQueueDelayTarget(target), bgpool.WithQueueSize(100000)}
				if adaptive {
					opts = append(opts, bgpool.WithAdaptiveConcurrency(1, 1))
				}
				p, err := bgpool.New(1, opts...)
				require.NoError(t, err)
				defer stopPool(p)
				const n = 20000 // 200ms of arrivals at twice the rate the worker serves
				waits := make([]time.Duration, n)
				ran := make([]bool, n)
				for i := range n {
					submitted := time.Now()
					require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
						waits[i], ran[i] = time.Since(submitted), true
						time.Sleep(service)
						return nil
					}))
					time.Sleep(every)
				}
				for p.Stats().Queued > 0 { // the queue drains before Shutdown, whose drain drops nothing
					time.Sleep(time.Millisecond)
				}
				require.NoError(t, p.Shutdown(context.Background()))
				s := p.Stats()
				assert.Positive(t, s.Delayed, "%+v", s)
				assertBalanced(t, s)
				first := slices.Index(ran, false) // the queue is FIFO: the first dropped
				require.Positive(t, first)
				for i := first; i < n; i++ {
					if ran[i] {
						assert.LessOrEqual(t, waits[i], target+shortTasks*service+time.Millisecond, "task %d ran after the drops began", i)
					}
				}
			})
		})
	}
}

// shortTasks is how many tasks a worker's last clock reading may lag behind
// by (bgpool's shortEvery).
const shortTasks = 16
