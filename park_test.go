package bgpool_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bgpool/bgpool"
)

func TestEveryTaskFindsAWorkerWhileWorkersParkAndTuneMovesTheCap(t *testing.T) {
	// Workers park and wake all the time here: submitters pause now and
	// then, so the queue empties, and Tune moves the cap up and down,
	// which retires parked workers and starts new ones. A lost wake-up
	// leaves a task in the queue with every worker asleep, or a task in
	// the hands of a worker that retires: the test then hangs until its
	// deadline. Submit, TrySubmit and Do all take part, on queues with and
	// without a buffer, on the workers' fast path and on the paths of pools
	// whose tasks are guarded (an observer) or controlled (overload
	// control, whose controller moves the cap too).
	type variant struct {
		name string
		opts []bgpool.Option
	}
	var variants []variant
	for _, queue := range []int{0, 1, 8, 256} {
		variants = append(variants, variant{fmt.Sprint("queue ", queue), []bgpool.Option{bgpool.WithQueueSize(queue)}})
	}
	variants = append(variants,
		variant{"an observer", []bgpool.Option{bgpool.WithQueueSize(8), bgpool.WithObserver(func(bgpool.TaskEvent) {})}},
		variant{"overload control", []bgpool.Option{bgpool.WithQueueSize(8),
			bgpool.WithAdaptiveConcurrency(1, 8), bgpool.WithQueueDelayTarget(time.Hour)}},
	)
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			const size, submitters, perSubmitter = 8, 8, 3000
			p := newPool(t, size, v.opts...)
			var ran, refused atomic.Int64
			task := func(context.Context) error { ran.Add(1); return nil }
			stop := make(chan struct{})
			tuned := make(chan struct{})
			go func() {
				defer close(tuned)
				for n := 0; ; n++ {
					select {
					case <-stop:
						p.Tune(size)
						return
					case <-time.After(50 * time.Microsecond):
						p.Tune(1 + n%size)
					}
				}
			}()
			var wg sync.WaitGroup
			errs := make(chan error, submitters)
			for g := range submitters {
				wg.Go(func() {
					for i := range perSubmitter {
						var err error
						switch (g + i) % 3 {
						case 0:
							err = p.Submit(context.Background(), task)
						case 1:
							if err = p.TrySubmit(context.Background(), task); err != nil {
								refused.Add(1)
								err = nil
							}
						default:
							err = p.Do(context.Background(), task)
						}
						if err != nil {
							errs <- err
							return
						}
						if i%64 == 0 {
							time.Sleep(20 * time.Microsecond) // let the queue empty and the workers park
						}
					}
				})
			}
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(60 * time.Second): // a hang, not a slow run: the test takes well under a second
				t.Fatalf("submitters still waiting after 60s: %+v", p.Stats())
			}
			close(stop)
			<-tuned
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			require.NoError(t, shutdownWithin(t, p, 10*time.Second, 20*time.Second))
			s := p.Stats()
			assert.Equal(t, int64(submitters*perSubmitter)-refused.Load(), ran.Load(), "every admitted task ran: %+v", s)
			assertBalanced(t, s)
		})
	}
}

func TestATaskWaitingForAnotherGetsAWorkerWhileOneIsIdle(t *testing.T) {
	// A task that waits (Do) for another on the same pool, while a worker
	// is idle: the inner task must reach that worker, however the wake-ups
	// of the parked workers and the tasks in the queue interleave. Were
	// the inner task left in the queue while the idle worker slept, the
	// outer one would wait for it until its deadline.
	p := newPool(t, 4, bgpool.WithQueueSize(16))
	const rounds = 2000
	for i := range rounds {
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				err := p.Do(context.Background(), func(context.Context) error {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					return p.Do(ctx, noop)
				})
				assert.NoError(t, err, "round %d: the inner task waited for a worker although two were idle", i)
			})
		}
		wg.Wait()
		if t.Failed() {
			return
		}
	}
	assertBalanced(t, p.Stats())
}

func TestStampedTasksOfManySubmittersEachRunOnce(t *testing.T) {
	// A pool that stamps its tasks (an observer wants their queue wait)
	// keeps each task's admission time in a record of its own, taken from
	// a block shared by every submitter: no two submitters may get the
	// same record, or one task would run twice and another never.
	const submitters, perSubmitter = 8, 4000
	var observed atomic.Int64
	p := newPool(t, 4, bgpool.WithQueueSize(64),
		bgpool.WithObserver(func(ev bgpool.TaskEvent) {
			if ev.QueueWait < 0 {
				panic(fmt.Sprintf("a negative queue wait: %v", ev.QueueWait))
			}
			observed.Add(1)
		}))
	var runs [submitters][perSubmitter]atomic.Int32
	var wg sync.WaitGroup
	for g := range submitters {
		wg.Go(func() {
			for i := range perSubmitter {
				if err := p.Submit(context.Background(), func(context.Context) error { runs[g][i].Add(1); return nil }); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	require.NoError(t, shutdownWithin(t, p, 10*time.Second, 20*time.Second))
	for g := range runs {
		for i := range runs[g] {
			if n := runs[g][i].Load(); n != 1 {
				t.Fatalf("task %d of submitter %d ran %d times, want once", i, g, n)
			}
		}
	}
	assert.Equal(t, int64(submitters*perSubmitter), observed.Load())
	assertBalanced(t, p.Stats())
}

func TestWaitersOfAHandOffOnlyPoolAllReachWorkersThatFallAsleep(t *testing.T) {
	// A queue without a buffer admits a task only into a worker's hands.
	// Here every worker falls asleep just as submitters that found none
	// free are on their way to wait for one: each waiter must still reach a
	// sleeping worker. The tasks of a round wait for each other, so a
	// waiter left waiting while a worker sleeps stops the round until the
	// tasks give up.
	const workers, rounds = 3, 500
	p := newPool(t, workers, bgpool.WithQueueSize(0))
	for r := range rounds {
		release := make(chan struct{})
		for range workers { // every worker busy
			require.NoError(t, p.Submit(context.Background(), func(context.Context) error { <-release; return nil }))
		}
		var arrived atomic.Int32
		all := make(chan struct{})
		var alone atomic.Int32
		barrier := func(context.Context) error {
			if arrived.Add(1) == workers {
				close(all)
			}
			select {
			case <-all:
			case <-time.After(5 * time.Second):
				alone.Add(1)
			}
			return nil
		}
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				assert.NoError(t, p.Submit(context.Background(), barrier))
			})
		}
		close(release) // the workers finish, and fall asleep as the waiters arrive
		wg.Wait()
		<-all
		if n := alone.Load(); n > 0 {
			t.Fatalf("round %d: %d tasks waited 5s for their round's last one, while a worker slept: %+v", r, n, p.Stats())
		}
	}
}
