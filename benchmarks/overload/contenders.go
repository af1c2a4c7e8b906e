package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/alitto/pond/v2"
	"github.com/failsafe-go/failsafe-go/adaptivelimiter"
	"github.com/panjf2000/ants/v2"

	"github.com/bgpool/bgpool"
)

// A runner is one contender's pool, made for one run.
type runner interface {
	// TrySubmit hands task to the pool without waiting; false means the
	// pool (or the limiter in front of it) refused it. task returns when
	// its work is done or its context ends.
	TrySubmit(task func(ctx context.Context)) bool
	// Cap reports the limit on tasks running at once, now.
	Cap() int
	// Close waits until every accepted task has returned or been
	// discarded, and frees the pool.
	Close() error
}

// A contender is one way to run the tasks: one entry of the table below.
type contender struct {
	Name  string
	Setup string // how it is configured, for the report
	New   func(c runConfig) (runner, error)
}

// runConfig is what a contender may need to know about the run.
type runConfig struct {
	Patience time.Duration // the task timeout: how long a task may take once it starts
	Oversize int           // a pool size far above the downstream's slots
	Queue    int           // the queue of the oversized pools
	Slots    int           // the downstream's slots: the right size
}

// contenders is the table of pools under test, each configured as its
// documentation recommends for non-blocking submission. To add one, add an
// entry; newBgpool takes any bgpool options.
var contenders = []contender{
	{
		Name:  "bgpool-right",
		Setup: "bgpool.New(8, WithQueueSize(8), WithPolicy(Reject), WithTaskTimeout(100ms))",
		New: func(c runConfig) (runner, error) {
			return newBgpool(c.Slots, bgpool.WithQueueSize(c.Slots), bgpool.WithPolicy(bgpool.Reject),
				bgpool.WithTaskTimeout(c.Patience))
		},
	},
	{
		Name:  "bgpool-large",
		Setup: "bgpool.New(256, WithQueueSize(1024), WithPolicy(Reject), WithTaskTimeout(100ms))",
		New: func(c runConfig) (runner, error) {
			return newBgpool(c.Oversize, bgpool.WithQueueSize(c.Queue), bgpool.WithPolicy(bgpool.Reject),
				bgpool.WithTaskTimeout(c.Patience))
		},
	},
	{
		Name: "bgpool-tune",
		Setup: "bgpool-large plus WithMaxQueueWait(5ms) and, every 50 ms, " +
			"p.Tune(cap × lowest run time seen / median run time of the last 50 ms + 2)",
		New: func(c runConfig) (runner, error) {
			return newTuned(c, 50*time.Millisecond, 5*time.Millisecond)
		},
	},
	{
		Name:  "bgpool-adaptive",
		Setup: "bgpool-large plus WithAdaptiveConcurrency(1, 256) and WithQueueDelayTarget(5ms)",
		New: func(c runConfig) (runner, error) {
			return newBgpool(c.Oversize, bgpool.WithQueueSize(c.Queue), bgpool.WithPolicy(bgpool.Reject),
				bgpool.WithTaskTimeout(c.Patience),
				bgpool.WithAdaptiveConcurrency(1, c.Oversize), bgpool.WithQueueDelayTarget(5*time.Millisecond))
		},
	},
	{
		Name:  "ants-large",
		Setup: "ants.NewPool(256, WithNonblocking(true)); the task applies the 100 ms timeout",
		New:   newAnts,
	},
	{
		Name:  "pond-large",
		Setup: "pond.NewPool(256, WithQueueSize(1024), WithNonBlocking(true)); the task applies the 100 ms timeout",
		New:   newPond,
	},
	{
		Name: "failsafe-large",
		Setup: "failsafe-go adaptivelimiter.NewWithDefaults (TryAcquirePermit, Record when the task returns) " +
			"in front of bgpool-large",
		New: newFailsafe,
	},
}

// lookupContenders returns the contenders named in the comma-separated
// list, in the table's order; "all" or "" means every one.
func lookupContenders(list string) ([]contender, error) {
	if list == "" || list == "all" {
		return contenders, nil
	}
	var names []string
	for _, n := range splitList(list) {
		if !slices.ContainsFunc(contenders, func(c contender) bool { return c.Name == n }) {
			var known []string
			for _, c := range contenders {
				known = append(known, c.Name)
			}
			return nil, fmt.Errorf("overload: unknown contender %q (known: %v)", n, known)
		}
		names = append(names, n)
	}
	var out []contender
	for _, c := range contenders {
		if slices.Contains(names, c.Name) {
			out = append(out, c)
		}
	}
	return out, nil
}

// bgpoolRunner runs tasks on a bgpool.Pool with TrySubmit.
type bgpoolRunner struct {
	p *bgpool.Pool
	// wrap, if set, wraps every task (the tuned contender times them).
	wrap func(task func(ctx context.Context)) func(ctx context.Context)
}

func newBgpool(size int, opts ...bgpool.Option) (*bgpoolRunner, error) {
	p, err := bgpool.New(size, opts...)
	if err != nil {
		return nil, err
	}
	return &bgpoolRunner{p: p}, nil
}

func (r *bgpoolRunner) TrySubmit(task func(ctx context.Context)) bool {
	if r.wrap != nil {
		task = r.wrap(task)
	}
	// The task reports its outcome itself and returns nil, so that the
	// pool's default error handler logs nothing.
	return r.p.TrySubmit(context.Background(), func(ctx context.Context) error {
		task(ctx)
		return nil
	}) == nil
}

func (r *bgpoolRunner) Cap() int { return r.p.Stats().Workers }

func (r *bgpoolRunner) Close() error { return r.p.Shutdown(context.Background()) }

// tunedRunner is bgpool-large with the external rule: every period
// it sets the cap to cap × lowest/median + 2, where lowest is the lowest
// run time seen so far and median the median run time of the tasks that
// ended in the last period.
type tunedRunner struct {
	*bgpoolRunner
	max  int
	stop chan struct{}
	done chan struct{}

	mu     sync.Mutex
	recent []time.Duration // run times of the tasks that ended this period
	lowest time.Duration   // the lowest run time seen, 0 before the first
}

func newTuned(c runConfig, period, maxQueueWait time.Duration) (*tunedRunner, error) {
	b, err := newBgpool(c.Oversize, bgpool.WithQueueSize(c.Queue), bgpool.WithPolicy(bgpool.Reject),
		bgpool.WithTaskTimeout(c.Patience), bgpool.WithMaxQueueWait(maxQueueWait))
	if err != nil {
		return nil, err
	}
	r := &tunedRunner{bgpoolRunner: b, max: c.Oversize, stop: make(chan struct{}), done: make(chan struct{})}
	b.wrap = func(task func(ctx context.Context)) func(ctx context.Context) {
		return func(ctx context.Context) {
			began := time.Now()
			task(ctx)
			r.ran(time.Since(began))
		}
	}
	go r.loop(period)
	return r, nil
}

func (r *tunedRunner) ran(d time.Duration) {
	r.mu.Lock()
	r.recent = append(r.recent, d)
	if r.lowest == 0 || d < r.lowest {
		r.lowest = d
	}
	r.mu.Unlock()
}

func (r *tunedRunner) loop(period time.Duration) {
	defer close(r.done)
	t := time.NewTicker(period)
	defer t.Stop()
	capNow := r.Cap()
	for {
		select {
		case <-r.stop: // the run is over
			return
		case <-t.C: // a period has passed: apply the rule
		}
		r.mu.Lock()
		recent, lowest := r.recent, r.lowest
		r.recent = nil
		r.mu.Unlock()
		if len(recent) == 0 {
			continue // nothing ended: nothing to learn
		}
		slices.Sort(recent)
		capNow = tuneStep(capNow, lowest, recent[len(recent)/2], r.max)
		r.p.Tune(capNow)
	}
}

// tuneStep is the rule: the next cap is cap × lowest/median + 2,
// kept between 1 and most.
func tuneStep(current int, lowest, median time.Duration, most int) int {
	next := int(float64(current)*float64(lowest)/float64(median)) + 2
	return min(max(next, 1), most)
}

func (r *tunedRunner) Close() error {
	close(r.stop)
	<-r.done
	return r.bgpoolRunner.Close()
}

// antsRunner runs tasks on a non-blocking ants.Pool. ants has no task
// timeout, so the task's context gets one when the task starts, as
// bgpool's WithTaskTimeout does.
type antsRunner struct {
	p        *ants.Pool
	patience time.Duration
}

func newAnts(c runConfig) (runner, error) {
	p, err := ants.NewPool(c.Oversize, ants.WithNonblocking(true))
	if err != nil {
		return nil, err
	}
	return &antsRunner{p: p, patience: c.Patience}, nil
}

func (r *antsRunner) TrySubmit(task func(ctx context.Context)) bool {
	return r.p.Submit(func() { withPatience(r.patience, task) }) == nil
}

func (r *antsRunner) Cap() int { return r.p.Cap() }

func (r *antsRunner) Close() error {
	// ReleaseTimeout returns once every worker has exited, after its task.
	return r.p.ReleaseTimeout(10 * time.Second)
}

// pondRunner runs tasks on a pond pool with a bounded queue and
// non-blocking submission; the task applies the timeout, as with ants.
type pondRunner struct {
	p        pond.Pool
	patience time.Duration
}

func newPond(c runConfig) (runner, error) {
	p := pond.NewPool(c.Oversize, pond.WithQueueSize(c.Queue), pond.WithNonBlocking(true))
	return &pondRunner{p: p, patience: c.Patience}, nil
}

func (r *pondRunner) TrySubmit(task func(ctx context.Context)) bool {
	return r.p.Go(func() { withPatience(r.patience, task) }) == nil
}

func (r *pondRunner) Cap() int { return r.p.MaxConcurrency() }

func (r *pondRunner) Close() error {
	r.p.StopAndWait()
	return nil
}

func withPatience(d time.Duration, task func(ctx context.Context)) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	task(ctx)
}

// failsafeRunner puts failsafe-go's adaptive limiter, with its defaults,
// in front of bgpool-large. A task takes a permit when it is submitted
// (TryAcquirePermit: the limiter's no-queueing default) and records it when
// it returns, so the limiter sees every task's time from submission to
// return, queueing in the pool and timeouts included: the latency its
// algorithm needs. A task the pool refuses drops its permit unrecorded.
type failsafeRunner struct {
	*bgpoolRunner
	lim adaptivelimiter.AdaptiveLimiter[any]
}

func newFailsafe(c runConfig) (runner, error) {
	b, err := newBgpool(c.Oversize, bgpool.WithQueueSize(c.Queue), bgpool.WithPolicy(bgpool.Reject),
		bgpool.WithTaskTimeout(c.Patience))
	if err != nil {
		return nil, err
	}
	return &failsafeRunner{bgpoolRunner: b, lim: adaptivelimiter.NewWithDefaults[any]()}, nil
}

func (r *failsafeRunner) TrySubmit(task func(ctx context.Context)) bool {
	permit, ok := r.lim.TryAcquirePermit()
	if !ok {
		return false
	}
	if !r.bgpoolRunner.TrySubmit(func(ctx context.Context) {
		defer permit.Record()
		task(ctx)
	}) {
		permit.Drop()
		return false
	}
	return true
}

func (r *failsafeRunner) Cap() int { return r.lim.Limit() }

var errNoContenders = errors.New("overload: no contenders to run")

// splitList splits a comma-separated list, dropping blanks around names.
func splitList(list string) []string {
	var out []string
	for n := range strings.SplitSeq(list, ",") {
		if n = strings.TrimSpace(n); n != "" {
			out = append(out, n)
		}
	}
	return out
}
