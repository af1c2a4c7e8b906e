package benchmarks_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/alitto/pond/v2"
	"golang.org/x/sync/errgroup"

	"github.com/bgpool/bgpool"
)

// The benchmarks of waiting for tasks: Pool.Do and Submit[T] beside pond's
// Submit(...).Wait(), and Group beside errgroup and pond's task groups. Every
// iteration runs 100,000 empty tasks on 64 workers, so ns/task, allocs/task
// and B/task (see reportPerTask) compare with BenchmarkEmptyTasks.

// waitContenders are the contenders of BenchmarkDo: each submits a task and
// waits for its end before it submits the next, on each of its submitter
// goroutines.
var waitContenders = []struct {
	name string
	open func(tb testing.TB, workers int) runner
}{
	{"bgpool-do", openBgpoolDo},
	{"bgpool-future", openBgpoolFuture},
	{"bgpool-submit-chan", openBgpoolSubmitChan},
	{"pond-submit-wait", openPondSubmitWait},
}

// newBgpool returns bgpool.New(workers) with the default options, and its
// Shutdown.
func newBgpool(tb testing.TB, workers int) (*bgpool.Pool, func()) {
	p, err := bgpool.New(workers)
	if err != nil {
		tb.Fatal(err)
	}
	return p, func() {
		if err := p.Shutdown(context.Background()); err != nil {
			panic(err)
		}
	}
}

// openBgpoolDo calls Pool.Do for every task.
func openBgpoolDo(tb testing.TB, workers int) runner {
	p, stop := newBgpool(tb, workers)
	ctx := context.Background()
	task := func(context.Context) error { return nil }
	return runner{
		run: func(n, submitters int) {
			fanOut(n, submitters, func(k int) {
				for range k {
					if err := p.Do(ctx, task); err != nil {
						panic(err)
					}
				}
			})
		},
		close: stop,
	}
}

// openBgpoolFuture calls Submit[T] and Future.Wait for every task.
func openBgpoolFuture(tb testing.TB, workers int) runner {
	p, stop := newBgpool(tb, workers)
	ctx := context.Background()
	fn := func(context.Context) (int, error) { return 1, nil }
	return runner{
		run: func(n, submitters int) {
			fanOut(n, submitters, func(k int) {
				for range k {
					f, err := bgpool.Submit(ctx, p, fn)
					if err != nil {
						panic(err)
					}
					if _, err := f.Wait(ctx); err != nil {
						panic(err)
					}
				}
			})
		},
		close: stop,
	}
}

// openBgpoolSubmitChan waits the way a caller of plain Submit would: a
// closure that closes a channel of its own. It costs the closure and the
// channel, and it hangs on a task that the pool drops.
func openBgpoolSubmitChan(tb testing.TB, workers int) runner {
	p, stop := newBgpool(tb, workers)
	ctx := context.Background()
	return runner{
		run: func(n, submitters int) {
			fanOut(n, submitters, func(k int) {
				for range k {
					done := make(chan struct{})
					if err := p.Submit(ctx, func(context.Context) error { close(done); return nil }); err != nil {
						panic(err)
					}
					<-done
				}
			})
		},
		close: stop,
	}
}

// openPondSubmitWait calls pond's SubmitErr, which returns a task future,
// and its Wait for every task, on pond.NewPool(workers) (an unbounded
// queue, pond's default).
func openPondSubmitWait(_ testing.TB, workers int) runner {
	p := pond.NewPool(workers)
	task := func() error { return nil }
	return runner{
		run: func(n, submitters int) {
			fanOut(n, submitters, func(k int) {
				for range k {
					if err := p.SubmitErr(task).Wait(); err != nil {
						panic(err)
					}
				}
			})
		},
		close: p.StopAndWait,
	}
}

// BenchmarkDo measures submitting a task and waiting for it, one task at a
// time per submitter: with one submitter it is the round trip to a worker
// and back; with 64 the workers are kept busy.
func BenchmarkDo(b *testing.B) {
	const workers = 64
	for _, c := range waitContenders {
		b.Run("pool="+c.name, func(b *testing.B) {
			for _, submitters := range []int{1, 64} {
				b.Run(fmt.Sprintf("submitters=%d/workers=%d", submitters, workers), func(b *testing.B) {
					r := c.open(b, workers)
					defer r.close()
					measure(b, r, submitters)
				})
			}
		})
	}
}

// groupContenders are the contenders of BenchmarkGroup. open returns a
// runner that runs its tasks in groups of size tasks: every submitter
// goroutine makes a group, submits size tasks to it, waits for them, and
// goes on with a new group.
var groupContenders = []struct {
	name string
	open func(tb testing.TB, workers, size int) runner
}{
	{"bgpool-group", openBgpoolGroup},
	{"bgpool-futures", openBgpoolFutures},
	{"errgroup", openErrgroupGroups},
	{"pond-group", openPondGroups},
}

// inGroups calls group(m) with group sizes m of at most size that add up
// to k.
func inGroups(k, size int, group func(m int)) {
	for k > 0 {
		m := min(size, k)
		group(m)
		k -= m
	}
}

// openBgpoolGroup runs every group with Pool.NewGroup, Group.Submit and
// Group.Wait, on one pool of workers shared by all groups.
func openBgpoolGroup(tb testing.TB, workers, size int) runner {
	p, stop := newBgpool(tb, workers)
	ctx := context.Background()
	task := func(context.Context) error { return nil }
	return runner{
		run: func(n, submitters int) {
			fanOut(n, submitters, func(k int) {
				inGroups(k, size, func(m int) {
					g, _ := p.NewGroup(ctx)
					for range m {
						if err := g.Submit(task); err != nil {
							panic(err)
						}
					}
					if err := g.Wait(); err != nil {
						panic(err)
					}
				})
			})
		},
		close: stop,
	}
}

// openBgpoolFutures runs every group as size calls of Submit[T], then a
// Future.Wait for each, on one pool of workers shared by all groups.
func openBgpoolFutures(tb testing.TB, workers, size int) runner {
	p, stop := newBgpool(tb, workers)
	ctx := context.Background()
	fn := func(context.Context) (int, error) { return 1, nil }
	return runner{
		run: func(n, submitters int) {
			fanOut(n, submitters, func(k int) {
				futures := make([]*bgpool.Future[int], min(size, k))
				inGroups(k, size, func(m int) {
					for i := range m {
						f, err := bgpool.Submit(ctx, p, fn)
						if err != nil {
							panic(err)
						}
						futures[i] = f
					}
					for _, f := range futures[:m] {
						if _, err := f.Wait(ctx); err != nil {
							panic(err)
						}
					}
				})
			})
		},
		close: stop,
	}
}

// openErrgroupGroups runs every group with errgroup.WithContext and
// SetLimit(workers). The limit holds for each group, not for all of them:
// with 8 submitters, up to 8 × workers tasks run at once.
func openErrgroupGroups(_ testing.TB, workers, size int) runner {
	ctx := context.Background()
	task := func() error { return nil }
	return runner{
		run: func(n, submitters int) {
			fanOut(n, submitters, func(k int) {
				inGroups(k, size, func(m int) {
					g, _ := errgroup.WithContext(ctx)
					g.SetLimit(workers)
					for range m {
						g.Go(task)
					}
					if err := g.Wait(); err != nil {
						panic(err)
					}
				})
			})
		},
		close: func() {},
	}
}

// openPondGroups runs every group with pond's NewGroupContext, SubmitErr
// and Wait, on one pond.NewPool(workers) shared by all groups.
func openPondGroups(_ testing.TB, workers, size int) runner {
	p := pond.NewPool(workers)
	ctx := context.Background()
	task := func() error { return nil }
	return runner{
		run: func(n, submitters int) {
			fanOut(n, submitters, func(k int) {
				inGroups(k, size, func(m int) {
					g := p.NewGroupContext(ctx)
					for range m {
						g.SubmitErr(task)
					}
					if err := g.Wait(); err != nil {
						panic(err)
					}
				})
			})
		},
		close: p.StopAndWait,
	}
}

// BenchmarkGroup measures groups of tasks that are waited for together, in
// two shapes: requests that fan out to 10 tasks each (group=10), from 1 and
// from 8 submitters, and one group of all 100,000 tasks (group=100000),
// which shows the cost per task alone.
func BenchmarkGroup(b *testing.B) {
	const workers = 64
	shapes := []struct{ size, submitters int }{{10, 1}, {10, 8}, {tasks, 1}}
	for _, c := range groupContenders {
		b.Run("pool="+c.name, func(b *testing.B) {
			for _, s := range shapes {
				b.Run(fmt.Sprintf("group=%d/submitters=%d/workers=%d", s.size, s.submitters, workers), func(b *testing.B) {
					r := c.open(b, workers, s.size)
					defer r.close()
					measure(b, r, s.submitters)
				})
			}
		})
	}
}

// BenchmarkNewGroup measures what a group costs by itself: making one and
// waiting for it, with no task. ns/op and allocs/op are per group.
func BenchmarkNewGroup(b *testing.B) {
	ctx := context.Background()
	b.Run("pool=bgpool-group", func(b *testing.B) {
		p, stop := newBgpool(b, 64)
		defer stop()
		b.ReportAllocs()
		for b.Loop() {
			g, _ := p.NewGroup(ctx)
			if err := g.Wait(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("pool=errgroup", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			g, _ := errgroup.WithContext(ctx)
			g.SetLimit(64)
			if err := g.Wait(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("pool=pond-group", func(b *testing.B) {
		p := pond.NewPool(64)
		defer p.StopAndWait()
		b.ReportAllocs()
		for b.Loop() {
			g := p.NewGroupContext(ctx)
			if err := g.Wait(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
