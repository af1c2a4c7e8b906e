package benchmarks_test

import (
	"context"
	"fmt"
	"runtime"
	"runtime/metrics"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alitto/pond/v2"
	"github.com/panjf2000/ants/v2"
	"github.com/sourcegraph/conc/pool"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/bgpool/bgpool"
)

// tasks is how many tasks one benchmark iteration runs: ns/op and allocs/op
// are per 100,000 tasks, and ns/task and allocs/task divide them out.
const tasks = 100_000

// A contender is one way of running tasks on a bounded (or, for the
// baselines, unbounded) number of goroutines.
//
// open prepares it for workers goroutines running body, outside the timed
// loop where the contender allows, so that the benchmark measures the steady
// state. Every task value a contender submits is made once in open, so a
// contender pays for a fresh value per task only when its API forces one;
// bgpool-fresh-closure makes one per task on purpose, to show that cost.
//
// queue is how many tasks may wait for a worker, for the contenders that
// have a queue (channel, pond, bgpool); the others ignore it. Zero means the
// contender's own setting in BenchmarkEmptyTasks: the channel and bgpool as
// deep as there are workers (bgpool's default), pond 1024.
type contender struct {
	name string
	open func(tb testing.TB, workers, queue int, body func()) runner
}

// A runner is an opened contender.
type runner struct {
	// run submits n tasks, split among submitters goroutines, and returns
	// once every one of them has finished.
	run   func(n, submitters int)
	close func()
}

var contenders = []contender{
	{"channel", openChannel},
	{"goroutines", openGoroutines},
	{"errgroup", openErrgroup},
	{"conc", openConc},
	{"ants", openAnts},
	{"pond", openPond(false)},
	{"pond-go", openPond(true)},
	{"bgpool", openBgpool("")},
	{"bgpool-timeout-ratelimit", openBgpool("timeout-ratelimit")},
	{"bgpool-fresh-closure", openBgpool("fresh-closure")},
}

// fanOut calls submit(k) on submitters goroutines with shares k that add up
// to n, and returns when every call has returned. With one submitter it calls
// submit(n) on the calling goroutine.
func fanOut(n, submitters int, submit func(k int)) {
	if submitters <= 1 {
		submit(n)
		return
	}
	var wg sync.WaitGroup
	for i := range submitters {
		k := n / submitters
		if i < n%submitters {
			k++
		}
		wg.Go(func() { submit(k) })
	}
	wg.Wait()
}

// openChannel is the floor: a buffered channel, queue deep (as deep as there
// are workers when queue is zero), feeding workers long-lived goroutines.
func openChannel(_ testing.TB, workers, queue int, body func()) runner {
	if queue == 0 {
		queue = workers
	}
	var wg sync.WaitGroup
	ch := make(chan func(), queue)
	var workersDone sync.WaitGroup
	for range workers {
		workersDone.Go(func() {
			for f := range ch {
				f()
			}
		})
	}
	task := func() { body(); wg.Done() }
	return runner{
		run: func(n, submitters int) {
			wg.Add(n)
			fanOut(n, submitters, func(k int) {
				for range k {
					ch <- task
				}
			})
			wg.Wait()
		},
		close: func() { close(ch); workersDone.Wait() },
	}
}

// openGoroutines starts one goroutine per task, with no bound.
func openGoroutines(_ testing.TB, _, _ int, body func()) runner {
	var wg sync.WaitGroup
	task := func() { body(); wg.Done() }
	return runner{
		run: func(n, submitters int) {
			wg.Add(n)
			fanOut(n, submitters, func(k int) {
				for range k {
					go task()
				}
			})
			wg.Wait()
		},
		close: func() {},
	}
}

// openErrgroup uses one errgroup.Group with SetLimit(workers); Go blocks
// while workers goroutines are running and starts a goroutine per task.
func openErrgroup(_ testing.TB, workers, _ int, body func()) runner {
	var g errgroup.Group
	g.SetLimit(workers)
	task := func() error { body(); return nil }
	return runner{
		run: func(n, submitters int) {
			fanOut(n, submitters, func(k int) {
				for range k {
					g.Go(task)
				}
			})
			_ = g.Wait()
		},
		close: func() {},
	}
}

// openConc uses conc's pool.Pool with WithMaxGoroutines(workers). A conc
// Pool cannot be reused after Wait, so every run makes a new one; its setup
// cost is spread over the run's tasks.
func openConc(_ testing.TB, workers, _ int, body func()) runner {
	return runner{
		run: func(n, submitters int) {
			p := pool.New().WithMaxGoroutines(workers)
			fanOut(n, submitters, func(k int) {
				for range k {
					p.Go(body)
				}
			})
			p.Wait()
		},
		close: func() {},
	}
}

// openAnts submits every task to an ants.Pool of size workers with ants'
// blocking Submit.
func openAnts(tb testing.TB, workers, _ int, body func()) runner {
	p, err := ants.NewPool(workers)
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	task := func() { body(); wg.Done() }
	return runner{
		run: func(n, submitters int) {
			wg.Add(n)
			fanOut(n, submitters, func(k int) {
				for range k {
					if err := p.Submit(task); err != nil {
						panic(err)
					}
				}
			})
			wg.Wait()
		},
		close: p.Release,
	}
}

// openPond returns the opener of a pond v2 pool with a queue of queue tasks,
// 1024 when queue is zero (submitting blocks while it is full). Without
// useGo it submits with Submit, pond's documented call, which returns a
// future for every task; with useGo it uses Go, pond's cheapest call, which
// returns none.
func openPond(useGo bool) func(testing.TB, int, int, func()) runner {
	return func(_ testing.TB, workers, queue int, body func()) runner {
		if queue == 0 {
			queue = 1024
		}
		p := pond.NewPool(workers, pond.WithQueueSize(queue))
		var wg sync.WaitGroup
		task := func() { body(); wg.Done() }
		submit := func(k int) {
			for range k {
				p.Submit(task)
			}
		}
		if useGo {
			submit = func(k int) {
				for range k {
					if err := p.Go(task); err != nil {
						panic(err)
					}
				}
			}
		}
		return runner{
			run: func(n, submitters int) {
				wg.Add(n)
				fanOut(n, submitters, submit)
				wg.Wait()
			},
			close: p.StopAndWait,
		}
	}
}

// openBgpool returns the opener of a bgpool contender with Submit and the
// Block policy, and WithQueueSize(queue) unless queue is zero (bgpool's
// default queue is as deep as there are workers):
//   - "": default options, one task value for every task;
//   - "timeout-ratelimit": WithTaskTimeout and WithRateLimit(rate.Inf, 1);
//   - "fresh-closure": default options, a new closure for every task, as a
//     caller that captures per-task data would submit.
func openBgpool(variant string) func(testing.TB, int, int, func()) runner {
	return func(tb testing.TB, workers, queue int, body func()) runner {
		var opts []bgpool.Option
		if queue != 0 {
			opts = append(opts, bgpool.WithQueueSize(queue))
		}
		switch variant {
		case "timeout-ratelimit":
			opts = append(opts, bgpool.WithTaskTimeout(time.Minute), bgpool.WithRateLimit(rate.Inf, 1))
		case "overload-control": // the cap free to move: empty tasks bring it down
			opts = append(opts, bgpool.WithAdaptiveConcurrency(1, workers), bgpool.WithQueueDelayTarget(time.Hour)) // a target no task reaches: every task runs, each through the delay control's path
		case "overload-control-fixed": // the bookkeeping alone: bounds that hold the cap
			opts = append(opts, bgpool.WithAdaptiveConcurrency(workers, workers), bgpool.WithQueueDelayTarget(time.Hour))
		}
		p, err := bgpool.New(workers, opts...)
		if err != nil {
			tb.Fatal(err)
		}
		ctx := context.Background()
		var wg sync.WaitGroup
		task := func(context.Context) error { body(); wg.Done(); return nil }
		submit := func(k int) {
			for range k {
				if err := p.Submit(ctx, task); err != nil {
					panic(err)
				}
			}
		}
		if variant == "fresh-closure" {
			submit = func(k int) {
				for i := range k {
					err := p.Submit(ctx, func(context.Context) error {
						if i < 0 { // never true; makes the closure capture i
							return nil
						}
						body()
						wg.Done()
						return nil
					})
					if err != nil {
						panic(err)
					}
				}
			}
		}
		return runner{
			run: func(n, submitters int) {
				wg.Add(n)
				fanOut(n, submitters, submit)
				wg.Wait()
			},
			close: func() {
				if err := p.Shutdown(context.Background()); err != nil {
					panic(err)
				}
			},
		}
	}
}

// reportPerTask reports ns/task, allocs/task and B/task, from the mallocs and
// bytes counted between before and the end of the timed loop. Like
// b.ReportAllocs it counts every goroutine's allocations, the pool's
// workers' included.
func reportPerTask(b *testing.B, before *runtime.MemStats) {
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	n := float64(b.N) * tasks
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/task")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/n, "allocs/task")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/n, "B/task")
}

// BenchmarkEmptyTasks measures the overhead per task: every iteration runs
// 100,000 tasks that do nothing but signal that they finished, on 64
// workers, submitted from one goroutine and from 8.
func BenchmarkEmptyTasks(b *testing.B) {
	const workers = 64
	for _, c := range contenders {
		b.Run("pool="+c.name, func(b *testing.B) {
			for _, submitters := range []int{1, 8} {
				name := fmt.Sprintf("submitters=%d/workers=%d", submitters, workers)
				b.Run(name, func(b *testing.B) {
					r := c.open(b, workers, 0, func() {})
					defer r.close()
					measure(b, r, submitters)
				})
			}
		})
	}
}

// measure times r running 100,000 tasks per iteration from submitters
// goroutines, after one untimed run that starts the workers, and reports
// the figures per task.
func measure(b *testing.B, r runner, submitters int) {
	r.run(tasks, submitters) // warm up: start the workers
	b.ReportAllocs()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	for b.Loop() {
		r.run(tasks, submitters)
	}
	b.StopTimer()
	reportPerTask(b, &before)
}

// submitterContenders are the contenders of BenchmarkSubmitters: the floor,
// the pool bgpool runs on, bgpool with and without its per-task options, and
// pond's cheapest call (Go, "pond-go" in BenchmarkEmptyTasks), each with a
// queue of the same depth where it has one.
var submitterContenders = []contender{
	{"channel", openChannel},
	{"ants", openAnts},
	{"bgpool", openBgpool("")},
	{"bgpool-timeout-ratelimit", openBgpool("timeout-ratelimit")},
	{"bgpool-overload-control", openBgpool("overload-control")},
	{"bgpool-overload-control-fixed", openBgpool("overload-control-fixed")},
	{"pond", openPond(true)},
}

// BenchmarkSubmitters measures how the cost per task grows with the number
// of goroutines calling Submit at once: every iteration runs 100,000 empty
// tasks on 64 workers behind a queue of 1024 (ants has no queue: its
// submitters wait for a worker), submitted from 1, 8, 64 and 512
// goroutines. Submitters outnumber the cores from 8 on, so this is the
// benchmark of contention on the pool's admission path. fanOut starts the
// submitter goroutines anew every iteration, the same for every contender:
// at 512 submitters that adds about 0.01 allocations (two per submitter)
// and a few ns a task.
func BenchmarkSubmitters(b *testing.B) {
	const workers, queue = 64, 1024
	for _, c := range submitterContenders {
		b.Run("pool="+c.name, func(b *testing.B) {
			for _, submitters := range []int{1, 8, 64, 512} {
				b.Run(fmt.Sprintf("submitters=%d", submitters), func(b *testing.B) {
					r := c.open(b, workers, queue, func() {})
					defer r.close()
					measure(b, r, submitters)
				})
			}
		})
	}
}

// BenchmarkBlockedSubmit measures a Submit that has to wait: 2 workers, a
// queue of 2, 8 submitters, and tasks that each spin for about 1µs and then
// yield their core, so that nearly every Submit finds the queue full and
// waits under the Block policy. The yield is what makes the submitters wait
// on a 2-core machine: without it the two spinning workers hold both cores,
// run the queue dry before a readied submitter gets to run, and only about
// a quarter of the Submits wait; with it, a block profile shows more than
// 99% of them blocked in the pool. ns/task is set by the workers and the
// scheduler; the figure to watch is allocs/task, which counts what a waiting
// Submit allocates, since the task value is made once and the task itself
// allocates nothing.
func BenchmarkBlockedSubmit(b *testing.B) {
	const workers, queue, submitters = 2, 2, 8
	b.Run(fmt.Sprintf("pool=bgpool/submitters=%d", submitters), func(b *testing.B) {
		r := openBgpool("")(b, workers, queue, func() {
			spinSink.Store(spin(spinSteps)) // kept, so the compiler cannot drop the loop
			runtime.Gosched()
		})
		defer r.close()
		measure(b, r, submitters)
	})
}

// spinSteps xorshift steps take about 1µs on the machine of the README.
const spinSteps = 500

// spinSink keeps spin's result alive, so that the compiler cannot drop the
// loop.
var spinSink atomic.Uint64

// spin is a fixed amount of CPU work without sleeping or allocating: steps
// rounds of a xorshift generator.
func spin(steps int) uint64 {
	x := uint64(88172645463325252)
	for range steps {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return x
}

// BenchmarkSleepTasks measures what bounding saves: every iteration runs
// 100,000 tasks that each sleep, on 10,000 workers (the goroutines
// contender ignores the bound). Besides time it reports the peak number of
// goroutines and the peak heap, taken as heap objects plus goroutine stacks
// (both live in the Go heap), above what they were before the contender was
// opened. With 10ms sleeps an unbounded submitter cannot start goroutines
// fast enough to have all 100,000 alive at once; 100ms sleeps show the case
// where it can.
func BenchmarkSleepTasks(b *testing.B) {
	const workers = 10_000
	for _, d := range []time.Duration{10 * time.Millisecond, 100 * time.Millisecond} {
		sleep := func() { time.Sleep(d) }
		for _, c := range contenders {
			b.Run(fmt.Sprintf("sleep=%v/pool=%s/workers=%d", d, c.name, workers), func(b *testing.B) {
				runtime.GC()
				s := startSampler() // before open: workers started there count
				r := c.open(b, workers, 0, sleep)
				defer r.close()
				b.ReportAllocs()
				var before runtime.MemStats
				runtime.ReadMemStats(&before)
				for b.Loop() {
					r.run(tasks, 1)
				}
				b.StopTimer()
				s.stop(b)
				reportPerTask(b, &before)
			})
		}
	}
}

// A sampler polls the heap, the stacks and the goroutine count every 200µs
// and keeps their peaks relative to a baseline taken when it starts.
type sampler struct {
	done      chan struct{}
	finished  chan struct{}
	base      uint64
	peakHeap  uint64
	baseStack uint64
	peakStack uint64
	baseG     int
	peakG     int
	samples   []metrics.Sample
}

func startSampler() *sampler {
	s := &sampler{
		done:     make(chan struct{}),
		finished: make(chan struct{}),
		samples: []metrics.Sample{
			{Name: "/memory/classes/heap/objects:bytes"},
			{Name: "/memory/classes/heap/stacks:bytes"},
		},
	}
	s.base = s.heap()
	s.baseStack = s.samples[1].Value.Uint64()
	s.baseG = runtime.NumGoroutine()
	go s.loop()
	return s
}

func (s *sampler) heap() uint64 {
	metrics.Read(s.samples)
	return s.samples[0].Value.Uint64() + s.samples[1].Value.Uint64()
}

func (s *sampler) loop() {
	defer close(s.finished)
	t := time.NewTicker(200 * time.Microsecond)
	defer t.Stop()
	for {
		if h := s.heap(); h > s.base && h-s.base > s.peakHeap {
			s.peakHeap = h - s.base
		}
		if st := s.samples[1].Value.Uint64(); st > s.baseStack && st-s.baseStack > s.peakStack {
			s.peakStack = st - s.baseStack
		}
		if g := runtime.NumGoroutine() - s.baseG; g > s.peakG {
			s.peakG = g
		}
		select {
		case <-t.C: // time for the next sample
		case <-s.done: // the benchmark is over
			return
		}
	}
}

// stop ends sampling and reports the peaks above the baseline: heap bytes
// (objects and stacks), stack bytes alone, and goroutines.
func (s *sampler) stop(b *testing.B) {
	close(s.done)
	<-s.finished
	b.ReportMetric(float64(s.peakHeap), "peak-heap-B")
	b.ReportMetric(float64(s.peakStack), "peak-stack-B")
	b.ReportMetric(float64(s.peakG), "peak-goroutines")
}

// BenchmarkIdleShutdown measures how long Shutdown takes on an idle pool
// (one task run, its worker parked), as shutdown-µs, the median over the
// iterations; and the same for a channel pool (close the channel, wait for
// the workers). Each iteration makes a new pool, so ns/op includes New and
// the one task.
func BenchmarkIdleShutdown(b *testing.B) {
	b.Run("pool=bgpool", func(b *testing.B) {
		b.ReportAllocs()
		var took []time.Duration
		for b.Loop() {
			p, err := bgpool.New(8)
			if err != nil {
				b.Fatal(err)
			}
			if err := p.Do(context.Background(), func(context.Context) error { return nil }); err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			if err := p.Shutdown(context.Background()); err != nil {
				b.Fatal(err)
			}
			took = append(took, time.Since(start))
		}
		reportMedian(b, took)
	})
	b.Run("pool=channel", func(b *testing.B) {
		b.ReportAllocs()
		var took []time.Duration
		for b.Loop() {
			ch := make(chan func(), 8)
			var wg sync.WaitGroup
			wg.Go(func() {
				for f := range ch {
					f()
				}
			})
			done := make(chan struct{})
			ch <- func() { close(done) }
			<-done
			start := time.Now()
			close(ch)
			wg.Wait()
			took = append(took, time.Since(start))
		}
		reportMedian(b, took)
	})
}

func reportMedian(b *testing.B, took []time.Duration) {
	slices.Sort(took)
	if len(took) > 0 {
		b.ReportMetric(float64(took[len(took)/2].Nanoseconds())/1e3, "shutdown-µs")
	}
}
