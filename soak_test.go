package bgpool_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgpool/bgpool"
)

// TestSoak runs mixed load on one pool per policy from many goroutines, with
// periodic Tune, and checks the pools' invariants as it goes, and at the end
// that the heap did not grow after warm-up. It runs only when BGPOOL_SOAK is
// set, to a duration ("60s") or to anything else for 60s, and -short is not:
//
//	BGPOOL_SOAK=60s go test -race -run TestSoak -v .
func TestSoak(t *testing.T) {
	env, ok := os.LookupEnv("BGPOOL_SOAK")
	if !ok || testing.Short() {
		t.Skip("set BGPOOL_SOAK=60s (and do not pass -short) to run the soak test")
	}
	duration := 60 * time.Second
	if d, err := time.ParseDuration(env); err == nil && d > 0 {
		duration = d
	}
	warmUp := min(duration/6, 10*time.Second)
	const (
		maxSize    = 8
		submitters = 8 // per pool
		checkEvery = time.Second
		tuneEvery  = 50 * time.Millisecond
	)

	pools := newSoakPools(t, maxSize)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, sp := range pools {
		for g := range submitters {
			wg.Go(func() { sp.submitLoop(stop, uint64(g)) })
		}
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(len(sp.name)), 1))
			tick := time.NewTicker(tuneEvery)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					sp.p.Tune(1 + rng.IntN(maxSize))
				}
			}
		})
	}

	begin := time.Now()
	var warm runtime.MemStats
	warmGoroutines, warmed := 0, false
	var peakHeap uint64
	last := make([]uint64, len(pools))
	check := time.NewTicker(checkEvery)
	defer check.Stop()
	for time.Since(begin) < duration {
		<-check.C
		for i, sp := range pools {
			s := sp.p.Stats()
			assert.LessOrEqual(t, s.Ended(), s.Submitted, "%s: more tasks settled than submitted: %+v", sp.name, s)
			assert.LessOrEqual(t, s.Running, maxSize, "%s: Running above the largest cap", sp.name)
			assert.Greater(t, s.Ended(), last[i], "%s: no task settled in %v: stuck? %+v", sp.name, checkEvery, s)
			last[i] = s.Ended()
		}
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		peakHeap = max(peakHeap, ms.HeapAlloc)
		if !warmed && time.Since(begin) >= warmUp {
			warm, warmGoroutines, warmed = ms, runtime.NumGoroutine(), true
		}
	}
	var end runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&end)
	endGoroutines := runtime.NumGoroutine()
	close(stop)
	wg.Wait()

	var total uint64
	for _, sp := range pools {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		start := time.Now()
		err := sp.p.Shutdown(ctx)
		elapsed := time.Since(start)
		cancel()
		// Tasks honour their context, and the longest lasts 2ms: Shutdown drains.
		assert.NoError(t, err, "%s: Shutdown", sp.name)
		assert.Less(t, elapsed, 5*time.Second+500*time.Millisecond, "%s: Shutdown returns by its deadline", sp.name)

		s := sp.p.Stats()
		assert.Equal(t, sp.calls.Load(), s.Submitted, "%s: Submitted: got %d, want the number of calls", sp.name, s.Submitted)
		assertBalanced(t, s, sp.name)
		assert.Zero(t, s.Running, sp.name)
		assert.Zero(t, s.Queued, sp.name)
		if sp.capped {
			assert.LessOrEqual(t, sp.tr.peak.Load(), int64(maxSize), "%s: tasks running at once", sp.name)
		}
		assert.Zero(t, sp.unexpected.Load(), "%s: Submit returned an unexpected error, such as %v", sp.name, sp.example.Load())
		assert.Zero(t, sp.lostValue.Load(), "%s: tasks whose context lost the submitter's value", sp.name)
		if sp.observed {
			got := func(o bgpool.Outcome) uint64 { return sp.outcomes[o].Load() }
			assert.Equal(t, []uint64{s.Completed, s.Failed, s.Panicked, s.Dropped, s.Rejected, s.Abandoned},
				[]uint64{got(bgpool.OutcomeCompleted), got(bgpool.OutcomeFailed), got(bgpool.OutcomePanicked),
					got(bgpool.OutcomeDropped) + got(bgpool.OutcomeExpired), got(bgpool.OutcomeRejected), got(bgpool.OutcomeAbandoned)},
				"%s: the observer saw every outcome that Stats counted", sp.name)
		}
		total += s.Submitted
		t.Logf("%-10s %+v", sp.name, s)
	}

	require.True(t, warmed, "the soak ended before its warm-up")
	t.Logf("%d tasks in %v (%.0f/s) on %d pools, %d submitters each, under %d CPUs",
		total, duration, float64(total)/duration.Seconds(), len(pools), submitters, runtime.GOMAXPROCS(0))
	t.Logf("heap after warm-up %.1f MiB, at the end %.1f MiB, peak %.1f MiB; goroutines %d then %d; GC cycles %d",
		mib(warm.HeapAlloc), mib(end.HeapAlloc), mib(peakHeap), warmGoroutines, endGoroutines, end.NumGC)
	// Retaining anything per task would grow the heap by hundreds of MiB
	// over millions of tasks; allow for noise and the race detector's shadow.
	assert.Less(t, end.HeapAlloc, 2*warm.HeapAlloc+4<<20, "the heap grew after warm-up")
	assert.Less(t, endGoroutines, warmGoroutines+len(pools)*maxSize+10, "goroutines grew after warm-up")
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// soakPool is one pool of the soak and its submitters' counters.
type soakPool struct {
	name     string
	p        *bgpool.Pool
	capped   bool // tasks never run on a submitter, so tr sees the size cap
	tr       tracker
	observed bool // outcomes counts what the pool's observer saw
	outcomes [bgpool.OutcomeHandedOff + 1]atomic.Uint64

	calls      atomic.Uint64
	unexpected atomic.Int64
	example    atomic.Value // the text of an unexpected error
	lostValue  atomic.Int64
}

func (sp *soakPool) observe(ev bgpool.TaskEvent) {
	if int(ev.Outcome) < len(sp.outcomes) {
		sp.outcomes[ev.Outcome].Add(1)
	}
}

type soakKey struct{}

func newSoakPools(t *testing.T, size int) []*soakPool {
	t.Helper()
	quiet := bgpool.WithErrorHandler(func(context.Context, error) {})
	// A policy that picks an action at random, to mix them in one pool.
	random := bgpool.PolicyFunc(func(ctx context.Context, o *bgpool.Overflow) error {
		switch rand.IntN(5) {
		case 0:
			wctx, cancel := context.WithTimeout(ctx, time.Millisecond)
			defer cancel()
			if err := o.Wait(wctx); err == nil {
				return nil
			}
			return o.Drop()
		case 1:
			return o.Drop()
		case 2:
			return o.Reject()
		case 3:
			return o.DropOldest()
		default:
			return o.Run()
		}
	})
	configs := []struct {
		name     string
		capped   bool
		observed bool
		opts     []bgpool.Option
	}{
		{"Block", true, false, []bgpool.Option{bgpool.WithPolicy(bgpool.Block), bgpool.WithTaskTimeout(time.Millisecond)}},
		{"BlockFor", true, true, []bgpool.Option{bgpool.WithPolicy(bgpool.BlockFor(time.Millisecond)), bgpool.WithMaxQueueWait(time.Millisecond)}},
		{"Drop", true, false, []bgpool.Option{bgpool.WithPolicy(bgpool.Drop), bgpool.WithQueueSize(0)}},
		{"Reject", true, false, []bgpool.Option{bgpool.WithPolicy(bgpool.Reject), bgpool.WithRateLimit(20000, 4)}},
		{"DropOldest", true, true, []bgpool.Option{bgpool.WithPolicy(bgpool.DropOldest)}},
		{"CallerRuns", false, false, []bgpool.Option{bgpool.WithPolicy(bgpool.CallerRuns), bgpool.WithTaskTimeout(2 * time.Millisecond)}},
		{"random", false, true, []bgpool.Option{bgpool.WithPolicy(random), bgpool.WithQueueSize(2 * size)}},
	}
	pools := make([]*soakPool, len(configs))
	for i, c := range configs {
		sp := &soakPool{name: c.name, capped: c.capped, observed: c.observed}
		opts := append(c.opts, quiet)
		if c.observed {
			opts = append(opts, bgpool.WithObserver(sp.observe))
		}
		sp.p = newPool(t, size, opts...)
		pools[i] = sp
	}
	return pools
}

var errSoak = errors.New("soak: task failed")

// submitLoop submits a mix of tasks until stop is closed.
func (sp *soakPool) submitLoop(stop <-chan struct{}, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, uint64(len(sp.name))))
	ctx := context.WithValue(context.Background(), soakKey{}, sp.name)
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		kind := rng.IntN(100)
		task := func(tctx context.Context) error {
			sp.tr.enter()
			defer sp.tr.leave()
			if tctx.Value(soakKey{}) != sp.name {
				sp.lostValue.Add(1)
			}
			switch {
			case kind < 60:
				return nil
			case kind < 70:
				return errSoak
			case kind < 75:
				panic("soak: task panicked")
			case kind < 95: // brief work
				timer := time.NewTimer(time.Duration(kind%3) * 100 * time.Microsecond)
				defer timer.Stop()
				select {
				case <-timer.C:
				case <-tctx.Done():
				}
				return nil
			default: // a task that waits for its context, which may never end
				wctx, cancel := context.WithTimeout(tctx, 2*time.Millisecond)
				defer cancel()
				<-wctx.Done()
				return wctx.Err()
			}
		}
		sp.calls.Add(1)
		var err error
		switch r := rng.IntN(10); {
		case r < 7:
			err = sp.p.Submit(ctx, task)
		case r < 9:
			err = sp.p.TrySubmit(ctx, task)
		default:
			sctx, cancel := context.WithTimeout(ctx, 500*time.Microsecond)
			err = sp.p.Submit(sctx, task)
			cancel()
		}
		if err != nil && !errors.Is(err, bgpool.ErrOverloaded) {
			sp.unexpected.Add(1)
			sp.example.Store(err.Error())
		}
		if i%64 == 0 {
			runtime.Gosched()
		}
	}
}
