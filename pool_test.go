package bgpool_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"golang.org/x/time/rate"

	"github.com/bgpool/bgpool"
)

func TestMain(m *testing.M) {
	// ants starts a package-level pool when it is imported.
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent())
}

func shutdown(t *testing.T, p *bgpool.Pool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, p.Shutdown(ctx))
}

func TestNewRejectsBadConfiguration(t *testing.T) {
	tests := []struct {
		name string
		size int
		opts []bgpool.Option
		want string
	}{
		{"size zero", 0, nil, "size must be at least 1"},
		{"negative size", -3, nil, "size must be at least 1"},
		{"negative queue size", 1, []bgpool.Option{bgpool.WithQueueSize(-1)}, "queue size must not be negative"},
		{"nil policy", 1, []bgpool.Option{bgpool.WithPolicy(nil)}, "policy must not be nil"},
		{"nil policy func", 1, []bgpool.Option{bgpool.WithPolicy(bgpool.PolicyFunc(nil))}, "policy must not be nil"},
		{"nil option", 1, []bgpool.Option{nil}, "option 0 is nil"},
		{"negative task timeout", 1, []bgpool.Option{bgpool.WithTaskTimeout(-time.Second)}, "must not be negative"},
		{"negative max queue wait", 1, []bgpool.Option{bgpool.WithMaxQueueWait(-time.Second)}, "must not be negative"},
		{"zero rate", 1, []bgpool.Option{bgpool.WithRateLimit(0, 1)}, "limit must be positive"},
		{"negative rate", 1, []bgpool.Option{bgpool.WithRateLimit(-1, 1)}, "limit must be positive"},
		{"burst zero", 1, []bgpool.Option{bgpool.WithRateLimit(10, 0)}, "burst must be at least 1"},
		{"burst zero with rate.Inf", 1, []bgpool.Option{bgpool.WithRateLimit(rate.Inf, 0)}, "burst must be at least 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := bgpool.New(tt.size, tt.opts...)
			require.Error(t, err)
			assert.Nil(t, p)
			assert.Contains(t, err.Error(), tt.want)
			assert.Contains(t, err.Error(), "bgpool: ")
		})
	}
}

func TestNewAcceptsValidConfiguration(t *testing.T) {
	p := newPool(t, 3,
		bgpool.WithQueueSize(0),
		bgpool.WithPolicy(bgpool.Reject),
		bgpool.WithRateLimit(rate.Inf, 1),
		bgpool.WithTaskTimeout(time.Second),
		bgpool.WithMaxQueueWait(time.Second),
		bgpool.WithErrorHandler(nil),
		bgpool.WithLogger(nil),
	)
	s := p.Stats()
	assert.Equal(t, 3, s.Workers)
	assert.Equal(t, 0, s.QueueSize)

	p = newPool(t, 5)
	assert.Equal(t, 5, p.Stats().QueueSize, "the default queue size equals the pool size")
}

func TestSubmitRejectsBadInput(t *testing.T) {
	p := newPool(t, 1)
	//lint:ignore SA1012 a nil context is the bad input under test
	err := p.Submit(nil, noop) //nolint:staticcheck
	require.Error(t, err)
	assert.Contains(t, err.Error(), "nil context")

	err = p.Submit(context.Background(), nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "nil task")

	err = p.TrySubmit(context.Background(), nil)
	require.Error(t, err)

	s := p.Stats()
	assert.Equal(t, uint64(3), s.Submitted)
	assert.Equal(t, uint64(3), s.Rejected)
}

func TestSubmitRunsTasks(t *testing.T) {
	p := newPool(t, 4)
	var ran atomic.Int64
	for i := 0; i < 1000; i++ {
		require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
			ran.Add(1)
			return nil
		}))
	}
	shutdown(t, p)
	assert.Equal(t, int64(1000), ran.Load())
	s := p.Stats()
	assert.Equal(t, uint64(1000), s.Submitted)
	assert.Equal(t, uint64(1000), s.Completed)
	assert.Equal(t, 0, s.Running)
	assert.Equal(t, 0, s.Queued)
}

func TestSubmitAdmitsWithRoomEvenWhenContextIsDone(t *testing.T) {
	p := newPool(t, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan struct{})
	require.NoError(t, p.Submit(ctx, func(context.Context) error { close(done); return nil }))
	<-done
}

// tracker records how many tasks run at once.
type tracker struct {
	cur, peak atomic.Int64
}

func (tr *tracker) enter() {
	c := tr.cur.Add(1)
	for {
		m := tr.peak.Load()
		if c <= m || tr.peak.CompareAndSwap(m, c) {
			return
		}
	}
}

func (tr *tracker) leave() { tr.cur.Add(-1) }

func TestNeverMoreThanSizeTasksRunAtOnce(t *testing.T) {
	policies := map[string]bgpool.Policy{
		"Block": bgpool.Block, "Drop": bgpool.Drop, "Reject": bgpool.Reject,
		"DropOldest": bgpool.DropOldest, "BlockFor": bgpool.BlockFor(time.Millisecond),
	}
	for name, policy := range policies {
		for _, queue := range []int{0, 3, 100} {
			t.Run(fmt.Sprintf("%s queue=%d", name, queue), func(t *testing.T) {
				const size = 4
				p := newPool(t, size, bgpool.WithPolicy(policy), bgpool.WithQueueSize(queue))
				var tr tracker
				var maxQueued atomic.Int64
				task := func(context.Context) error {
					tr.enter()
					runtime.Gosched()
					if q := int64(p.Stats().Queued); q > maxQueued.Load() {
						maxQueued.Store(q)
					}
					tr.leave()
					return nil
				}
				var wg sync.WaitGroup
				for g := 0; g < 8; g++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := 0; i < 500; i++ {
							_ = p.Submit(context.Background(), task)
						}
					}()
				}
				wg.Wait()
				shutdown(t, p)
				assert.LessOrEqual(t, tr.peak.Load(), int64(size), "peak concurrency")
				assert.LessOrEqual(t, maxQueued.Load(), int64(queue), "peak queue length")
				s := p.Stats()
				assert.Equal(t, uint64(8*500), s.Submitted)
				assert.Equal(t, s.Submitted, s.Ended(), "accounting: %+v", s)
			})
		}
	}
}

func TestQueueStartsTasksInFIFOOrder(t *testing.T) {
	p := newPool(t, 1, bgpool.WithQueueSize(50))
	release := occupy(t, p, 1)
	var mu sync.Mutex
	var order []int
	for i := 0; i < 50; i++ {
		require.NoError(t, p.TrySubmit(context.Background(), func(context.Context) error {
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			return nil
		}))
	}
	assert.Equal(t, 50, p.Stats().Queued)
	release()
	shutdown(t, p)
	want := make([]int, 50)
	for i := range want {
		want[i] = i
	}
	assert.Equal(t, want, order)
}

func TestQueueHoldsAtMostQueueSize(t *testing.T) {
	for _, queue := range []int{0, 1, 5} {
		t.Run(fmt.Sprintf("queue=%d", queue), func(t *testing.T) {
			p := newPool(t, 2, bgpool.WithQueueSize(queue), bgpool.WithPolicy(bgpool.Reject))
			release := occupy(t, p, 2)
			for i := 0; i < queue; i++ {
				require.NoError(t, p.Submit(context.Background(), noop), "task %d fits the queue", i)
			}
			err := p.Submit(context.Background(), noop)
			assert.ErrorIs(t, err, bgpool.ErrOverloaded)
			s := p.Stats()
			assert.Equal(t, queue, s.Queued)
			assert.Equal(t, 2, s.Running)
			release()
		})
	}
}

func TestHandOffOnlyAdmitsWhenAWorkerIsFree(t *testing.T) {
	p := newPool(t, 2, bgpool.WithQueueSize(0))
	g := newGate(2)
	require.NoError(t, p.TrySubmit(context.Background(), g.task))
	require.NoError(t, p.TrySubmit(context.Background(), g.task), "a second worker is free")
	g.waitStarted(t, 2)
	assert.ErrorIs(t, p.TrySubmit(context.Background(), noop), bgpool.ErrOverloaded)
	assert.Equal(t, 0, p.Stats().Queued)
	g.open()
}

func TestTrySubmitNeverWaitsWhateverThePolicy(t *testing.T) {
	for name, policy := range map[string]bgpool.Policy{"Block": bgpool.Block, "CallerRuns": bgpool.CallerRuns, "Drop": bgpool.Drop} {
		t.Run(name, func(t *testing.T) {
			p := newPool(t, 1, bgpool.WithQueueSize(0), bgpool.WithPolicy(policy))
			release := occupy(t, p, 1)
			ran := false
			err := p.TrySubmit(context.Background(), func(context.Context) error { ran = true; return nil })
			assert.ErrorIs(t, err, bgpool.ErrOverloaded)
			assert.False(t, ran)
			s := p.Stats()
			assert.Equal(t, uint64(1), s.Rejected)
			assert.Equal(t, uint64(0), s.Dropped)
			release()
		})
	}
}

func TestTuneGrowsAndShrinksTheCap(t *testing.T) {
	p := newPool(t, 1, bgpool.WithQueueSize(10))
	g := newGate(20)
	for i := 0; i < 5; i++ {
		require.NoError(t, p.Submit(context.Background(), g.task))
	}
	g.waitStarted(t, 1)
	assert.Equal(t, 1, p.Stats().Running)

	p.Tune(4)
	g.waitStarted(t, 3)
	s := p.Stats()
	assert.Equal(t, 4, s.Workers)
	assert.Equal(t, 4, s.Running)
	assert.Equal(t, 1, s.Queued)

	p.Tune(0)  // ignored
	p.Tune(-1) // ignored
	assert.Equal(t, 4, p.Stats().Workers)

	// Shrink to 2: running tasks finish, and no more than 2 run afterwards.
	p.Tune(2)
	var tr tracker
	for i := 0; i < 5; i++ {
		require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
			tr.enter()
			defer tr.leave()
			time.Sleep(time.Millisecond)
			return nil
		}))
	}
	g.open()
	shutdown(t, p)
	assert.LessOrEqual(t, tr.peak.Load(), int64(2))
	s = p.Stats()
	assert.Equal(t, uint64(10), s.Completed)
}

func TestTuneUnderLoadNeverExceedsTheCap(t *testing.T) {
	p := newPool(t, 8, bgpool.WithQueueSize(16))
	var tr tracker
	var cap atomic.Int64
	cap.Store(8)
	var violations atomic.Int64
	task := func(context.Context) error {
		tr.enter()
		// A task may start only while the running count fits the cap in
		// force when it started; Tune changes the cap concurrently, so we
		// compare with the largest cap the test has set since then.
		if tr.cur.Load() > 8 {
			violations.Add(1)
		}
		runtime.Gosched()
		tr.leave()
		return nil
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sizes := []int{1, 8, 3, 5, 2, 8}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			n := sizes[i%len(sizes)]
			cap.Store(int64(n))
			p.Tune(n)
			time.Sleep(100 * time.Microsecond)
		}
	}()
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				_ = p.Submit(context.Background(), task)
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(stop)
	wg.Wait()
	shutdown(t, p)
	assert.Zero(t, violations.Load())
	assert.LessOrEqual(t, tr.peak.Load(), int64(8))
	s := p.Stats()
	assert.Equal(t, s.Submitted, s.Ended())
	assert.Equal(t, uint64(8000), s.Completed, "Block loses nothing")
}

func TestTaskSubmittingToItsOwnFullPoolDoesNotDeadlock(t *testing.T) {
	policies := map[string]bgpool.Policy{
		"Block": bgpool.Block, "BlockFor": bgpool.BlockFor(10 * time.Millisecond), "Drop": bgpool.Drop,
		"Reject": bgpool.Reject, "DropOldest": bgpool.DropOldest, "CallerRuns": bgpool.CallerRuns,
	}
	for name, policy := range policies {
		t.Run(name, func(t *testing.T) {
			p := newPool(t, 1, bgpool.WithQueueSize(1), bgpool.WithPolicy(policy))
			results := make(chan error, 1)
			require.NoError(t, p.Submit(context.Background(), func(ctx context.Context) error {
				// The queue takes the first; the second overflows while this
				// task holds the only worker.
				_ = p.Submit(ctx, noop)
				wctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
				defer cancel()
				results <- p.Submit(wctx, noop)
				return nil
			}))
			select {
			case err := <-results:
				if name == "Block" || name == "BlockFor" || name == "Reject" {
					assert.ErrorIs(t, err, bgpool.ErrOverloaded)
				} else {
					assert.NoError(t, err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("a task submitting to its own full pool deadlocked")
			}
			shutdown(t, p)
			s := p.Stats()
			assert.Equal(t, s.Submitted, s.Ended())
		})
	}
}

func TestAccountingInvariantUnderConcurrentLoadWithShutdown(t *testing.T) {
	policies := map[string]bgpool.Policy{
		"Block": bgpool.Block, "BlockFor": bgpool.BlockFor(time.Millisecond), "Drop": bgpool.Drop,
		"Reject": bgpool.Reject, "DropOldest": bgpool.DropOldest, "CallerRuns": bgpool.CallerRuns,
	}
	for name, policy := range policies {
		t.Run(name, func(t *testing.T) {
			p, err := bgpool.New(4, bgpool.WithQueueSize(8), bgpool.WithPolicy(policy),
				bgpool.WithErrorHandler(func(context.Context, error) {}))
			require.NoError(t, err)
			var calls atomic.Uint64
			task := func(ctx context.Context) error {
				switch calls.Add(1) % 5 {
				case 0:
					return errors.New("failed")
				case 1:
					panic("boom")
				case 2:
					select {
					case <-ctx.Done():
					case <-time.After(time.Millisecond):
					}
				}
				return nil
			}
			var wg sync.WaitGroup
			var submitted atomic.Uint64
			for g := 0; g < 16; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; i < 300; i++ {
						ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
						if i%2 == 0 {
							_ = p.Submit(ctx, task)
						} else {
							_ = p.TrySubmit(ctx, task)
						}
						cancel()
						submitted.Add(1)
					}
				}()
			}
			time.Sleep(5 * time.Millisecond)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Millisecond)
			_ = p.Shutdown(ctx) // may abandon
			cancel()
			wg.Wait()
			// Wait for the drain; an error here only repeats the abandonment.
			if err := p.Shutdown(context.Background()); err != nil {
				assert.ErrorContains(t, err, "abandoned by an earlier Shutdown")
			}
			// A Shutdown that repeats an abandonment does not wait: a task
			// between two places as the pool was abandoned can be missing
			// from Submitted (counted Waiting; see Pool.Stats) until it
			// settles.
			s := waitStats(t, p, func(s bgpool.Stats) bool { return s.Waiting == 0 })
			assert.Equal(t, submitted.Load(), s.Submitted)
			assertBalanced(t, s, "once drained")
			assert.Zero(t, s.Running)
			assert.Zero(t, s.Queued)
		})
	}
}

func TestTuneGrowthReachesWaitingSubmittersWithoutAQueue(t *testing.T) {
	p := newPool(t, 1, bgpool.WithQueueSize(0))
	release := occupy(t, p, 1)
	g := newGate(8)
	errs := make(chan error, 8)
	for range 8 {
		go func() { errs <- p.Submit(context.Background(), g.task) }()
	}
	waitStats(t, p, func(s bgpool.Stats) bool { return s.Waiting == 8 })
	p.Tune(100)
	g.waitStarted(t, 8) // all of them, while the first task still holds its worker
	for range 8 {
		assert.NoError(t, <-errs)
	}
	g.open()
	release()
}

func TestATaskHandedToAStartingWorkerIsCountedAtOnce(t *testing.T) {
	p := newPool(t, 1000)
	g := newGate(200)
	for range 200 {
		require.NoError(t, p.Submit(context.Background(), g.task))
	}
	s := p.Stats()
	assert.Equal(t, uint64(200), s.Submitted, "%+v", s)
	assert.Zero(t, s.Ended(), "no task has ended: %+v", s)
	assertBalanced(t, s, "every task is Queued or Running at once")
	assert.Equal(t, 0, s.Waiting, "%+v", s)
	g.open()
}

// New refuses a size beyond math.MaxInt32 and names it, accepts
// math.MaxInt32 itself and runs a task, and Tune clamps a larger size to
// math.MaxInt32.
func TestSizeBeyondMaxInt32IsRefusedByNewAndClampedByTune(t *testing.T) {
	if strconv.IntSize < 64 {
		t.Skip("sizes beyond math.MaxInt32 need a 64-bit int")
	}
	huge := []int64{1 << 31, 1 << 32} // int64, so that the file compiles where int has 32 bits

	t.Run("New refuses a size beyond math.MaxInt32", func(t *testing.T) {
		for _, size := range huge {
			p, err := bgpool.New(int(size))
			if p != nil {
				stopPool(p)
			}
			assert.True(t, p == nil, "New(%d) returned a pool", size)
			if assert.Error(t, err, "New(%d)", size) {
				assert.Contains(t, err.Error(), strconv.FormatInt(size, 10))
			}
		}
	})

	t.Run("New accepts math.MaxInt32 and runs a task", func(t *testing.T) {
		p := newPool(t, math.MaxInt32)
		ran := make(chan struct{})
		require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
			close(ran)
			return nil
		}))
		receive(t, ran, 2*time.Second, "the task did not run")
	})

	t.Run("Tune clamps a size beyond math.MaxInt32", func(t *testing.T) {
		p := newPool(t, 1)
		p.Tune(int(huge[1]))
		assert.Equal(t, math.MaxInt32, p.Stats().Workers)

		ran := make(chan struct{})
		submitted := make(chan error, 1)
		go func() {
			submitted <- p.Submit(context.Background(), func(context.Context) error {
				close(ran)
				return nil
			})
		}()
		receive(t, ran, 2*time.Second, "a task submitted after Tune did not run")
		assert.NoError(t, receive(t, submitted, 2*time.Second, "Submit did not return"))
	})
}

// New refuses a queue of math.MaxInt, and accepts a queue of 1<<20 that
// admits and runs tasks.
func TestNewRefusesAnOversizedQueueAndAcceptsALargeOne(t *testing.T) {
	t.Run("New refuses a queue of math.MaxInt", func(t *testing.T) {
		p, err := bgpool.New(1, bgpool.WithQueueSize(math.MaxInt))
		if p != nil {
			stopPool(p)
		}
		assert.True(t, p == nil, "New returned a pool")
		assert.Error(t, err)
	})

	t.Run("New accepts a queue of 1<<20 that admits and runs tasks", func(t *testing.T) {
		p := newPool(t, 1, bgpool.WithQueueSize(1<<20))
		release := occupy(t, p, 1)
		var ran atomic.Int32
		for range 3 {
			require.NoError(t, p.TrySubmit(context.Background(), func(context.Context) error {
				ran.Add(1)
				return nil
			}))
		}
		release()
		waitStats(t, p, idleWith(4))
		assert.Equal(t, int32(3), ran.Load())
	})
}

// New starts no goroutine: workers start with the first tasks.
func TestNewStartsNoGoroutine(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	p, err := bgpool.New(4)
	require.NoError(t, err)
	t.Cleanup(func() { stopPool(p) })
	goleak.VerifyNone(t, opt)
}

// typedNilPolicy is a Policy whose nil pointer must not pass for a policy.
type typedNilPolicy struct{}

func (*typedNilPolicy) Overflow(_ context.Context, o *bgpool.Overflow) error { return o.Reject() }

// A nil argument is caught where it is passed: New refuses a typed nil
// policy. (Expvar's nil pool: TestExpvarPanicsAtOnceOnANilPoolWithABgpoolMessage.)
func TestNilArgumentsAreCaughtAtTheCall(t *testing.T) {
	t.Run("New refuses a typed nil policy", func(t *testing.T) {
		p, err := bgpool.New(1, bgpool.WithPolicy((*typedNilPolicy)(nil)))
		if p != nil {
			stopPool(p)
		}
		assert.True(t, p == nil, "New returned a pool")
		assert.Error(t, err)
	})
}
