package bgpool_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/bgpool/bgpool"
)

func ExampleNew() {
	p, err := bgpool.New(8,
		bgpool.WithQueueSize(100),           // up to 100 tasks wait for a worker
		bgpool.WithPolicy(bgpool.Reject),    // beyond that, Submit returns ErrOverloaded
		bgpool.WithTaskTimeout(time.Minute), // each task's ctx ends after a minute
	)
	if err != nil {
		panic(err)
	}
	defer p.Shutdown(context.Background())

	s := p.Stats()
	fmt.Println("workers:", s.Workers, "queue:", s.QueueSize)

	_, err = bgpool.New(0)
	fmt.Println(err)
	// Output:
	// workers: 8 queue: 100
	// bgpool: New(0): size must be at least 1
}

type userKey struct{}

func ExamplePool_Submit() {
	p, _ := bgpool.New(4)

	// The task sees the submitter's values, not its cancellation: it keeps
	// running after a request that submitted it has ended.
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), userKey{}, "ada"))
	done := make(chan struct{})
	err := p.Submit(ctx, func(ctx context.Context) error {
		defer close(done)
		fmt.Println("welcome mail for", ctx.Value(userKey{}), "- cancelled:", ctx.Err() != nil)
		return nil
	})
	cancel()
	if err != nil {
		fmt.Println("not submitted:", err)
	}
	<-done
	_ = p.Shutdown(context.Background())
	// Output:
	// welcome mail for ada - cancelled: false
}

func ExamplePool_Shutdown() {
	p, _ := bgpool.New(2)
	var sent atomic.Int64
	for range 10 {
		_ = p.Submit(context.Background(), func(context.Context) error {
			sent.Add(1)
			return nil
		})
	}

	// Give the drain a deadline, as a service does with its grace period.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		fmt.Println("shutdown:", err) // what was abandoned at the deadline
	}
	fmt.Println("sent:", sent.Load())
	fmt.Println(p.Submit(context.Background(), func(context.Context) error { return nil }))
	s := p.Stats()
	fmt.Println("completed:", s.Completed, "rejected:", s.Rejected)
	// Output:
	// sent: 10
	// bgpool: pool is closed
	// completed: 10 rejected: 1
}

// A policy of your own: wait up to 10ms for room, then reject.
func ExamplePolicyFunc() {
	blockThenReject := bgpool.PolicyFunc(func(ctx context.Context, o *bgpool.Overflow) error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
		defer cancel()
		if err := o.Wait(ctx); err == nil {
			return nil // admitted within 10ms
		}
		return o.Reject()
	})

	p, _ := bgpool.New(1, bgpool.WithQueueSize(0), bgpool.WithPolicy(blockThenReject))
	release := make(chan struct{})
	started := make(chan struct{})
	_ = p.Submit(context.Background(), func(context.Context) error {
		close(started)
		<-release // hold the only worker
		return nil
	})
	<-started

	err := p.Submit(context.Background(), func(context.Context) error { return nil })
	fmt.Println(errors.Is(err, bgpool.ErrOverloaded), p.Stats().Rejected)

	close(release)
	_ = p.Shutdown(context.Background())
	// Output:
	// true 1
}

func ExampleWithObserver() {
	var completed, failed atomic.Int64
	p, _ := bgpool.New(2,
		bgpool.WithErrorHandler(func(context.Context, error) {}),
		bgpool.WithObserver(func(ev bgpool.TaskEvent) {
			// Feed histograms here: ev.QueueWait, ev.RunTime.
			switch ev.Outcome {
			case bgpool.OutcomeCompleted:
				completed.Add(1)
			case bgpool.OutcomeFailed:
				failed.Add(1)
			}
		}))
	_ = p.Submit(context.Background(), func(context.Context) error { return nil })
	_ = p.Submit(context.Background(), func(context.Context) error { return errors.New("smtp: 421") })
	_ = p.Shutdown(context.Background())
	fmt.Println("completed:", completed.Load(), "failed:", failed.Load())
	// Output:
	// completed: 1 failed: 1
}

// quota is a Limiter of one's own: here, at most n task starts in all. A
// Limiter shared by every replica of a service (on Redis, say) has the same
// two methods.
type quota struct{ left atomic.Int64 }

var errQuotaSpent = errors.New("quota spent")

func (q *quota) Wait(ctx context.Context) error {
	if q.left.Add(-1) < 0 {
		return errQuotaSpent
	}
	return ctx.Err()
}

func ExampleWithLimiter() {
	q := &quota{}
	q.left.Store(2)
	p, err := bgpool.New(1, bgpool.WithLimiter(q),
		bgpool.WithErrorHandler(func(_ context.Context, err error) { fmt.Println("error handler:", err) }))
	if err != nil {
		panic(err)
	}
	for i := range 3 {
		_ = p.Submit(context.Background(), func(context.Context) error {
			fmt.Println("task", i)
			return nil
		})
	}
	_ = p.Shutdown(context.Background())
	s := p.Stats()
	fmt.Println("completed:", s.Completed, "dropped:", s.Dropped)
	// Output:
	// task 0
	// task 1
	// error handler: bgpool: rate limiter failed; task dropped: quota spent
	// completed: 2 dropped: 1
}

// A pool for tasks that call a database whose capacity nobody measured:
// the cap starts at 64 and finds its own level between 1 and 64 from the
// tasks' run times, and the queue drops at its head what has waited past
// 5ms once a queue stands, so a task either starts soon or not at all.
func ExampleWithAdaptiveConcurrency() {
	p, err := bgpool.New(256, // New's size, clamped to the bounds: 64
		bgpool.WithAdaptiveConcurrency(1, 64),
		bgpool.WithQueueDelayTarget(5*time.Millisecond),
		bgpool.WithQueueSize(1024),
		bgpool.WithPolicy(bgpool.Reject),
		bgpool.WithTaskTimeout(time.Second),
	)
	if err != nil {
		panic(err)
	}
	defer p.Shutdown(context.Background())
	fmt.Println("cap:", p.Stats().Workers)

	p.Tune(100) // Tune moves the cap too, within the bounds
	fmt.Println("cap after Tune(100):", p.Stats().Workers)

	_, err = bgpool.New(8, bgpool.WithAdaptiveConcurrency(8, 4))
	fmt.Println(err)
	// Output:
	// cap: 64
	// cap after Tune(100): 64
	// bgpool: WithAdaptiveConcurrency(8, 4): need 1 <= min <= max <= MaxWorkers
}
