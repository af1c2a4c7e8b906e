package bgotel

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/bgpool/bgpool"
)

// ScopeName is the instrumentation scope of the Meter and the Tracer that
// this package uses: the module's import path.
const ScopeName = "github.com/bgpool/bgpool/contrib/otel"

// The attribute keys that this package sets on its instruments and spans.
const (
	// PoolNameKey names the pool, from NewMetrics' and NewTracing's name
	// argument: on every measurement and every span.
	PoolNameKey = attribute.Key("bgpool.pool.name")
	// OutcomeKey is how a task ended: completed, failed, panicked,
	// dropped, rejected, abandoned or handed_off (Outcome.String).
	OutcomeKey = attribute.Key("bgpool.task.outcome")
	// TimeInQueueKey is a span's queue wait, in seconds (TaskInfo.QueueWait).
	TimeInQueueKey = attribute.Key("bgpool.task.time_in_queue")
	// AwaitedKey tells on a span whether someone waited for the task
	// (TaskInfo.Awaited).
	AwaitedKey = attribute.Key("bgpool.task.awaited")
	// JobKindKey is a span's Job kind (TaskInfo.Kind), set only for a Job.
	JobKindKey = attribute.Key("bgpool.job.kind")
)

// statsOutcomes are the outcomes that bgpool.tasks reports, one per outcome
// counter in bgpool.Stats, so that once the pool is quiet they add up to
// Stats.Submitted. An expired task is counted dropped, as Stats counts it:
// counting it apart through Observe would let a collection that falls
// between the pool's count and the observer's call see dropped go down,
// which a cumulative counter must never do.
var statsOutcomes = [...]bgpool.Outcome{
	bgpool.OutcomeCompleted,
	bgpool.OutcomeFailed,
	bgpool.OutcomePanicked,
	bgpool.OutcomeDropped,
	bgpool.OutcomeRejected,
	bgpool.OutcomeAbandoned,
	bgpool.OutcomeHandedOff,
}

// ranOutcomes are the outcomes of a task that ran, which bgpool.task.duration
// is recorded under.
var ranOutcomes = [...]bgpool.Outcome{
	bgpool.OutcomeCompleted,
	bgpool.OutcomeFailed,
	bgpool.OutcomePanicked,
	bgpool.OutcomeAbandoned,
}

// Metrics exports one bgpool.Pool's state and task outcomes as
// OpenTelemetry metrics. Create one with NewMetrics, pass its Observe method
// to bgpool.New with bgpool.WithObserver, and hand it the pool with Watch.
// The zero Metrics is not usable. All methods are safe for concurrent use.
//
// The pool's state and the outcome counts are observable instruments, read
// from one call to p.Stats() per collection, so they always agree with
// Stats and cost nothing between collections. The two histograms are fed
// per task by Observe, since Stats keeps no timings. Before Watch, and after
// Watch(nil), a collection reports the histograms only: zeros would read as
// a pool with no workers.
//
// Several pools are told apart by the bgpool.pool.name attribute: make one
// Metrics per pool, each with its own name, on the same MeterProvider.
type Metrics struct {
	pool atomic.Pointer[bgpool.Pool]
	reg  metric.Registration

	workers       metric.Int64ObservableUpDownCounter
	running       metric.Int64ObservableUpDownCounter
	queued        metric.Int64ObservableUpDownCounter
	queueCapacity metric.Int64ObservableUpDownCounter
	waiting       metric.Int64ObservableUpDownCounter
	tasks         metric.Int64ObservableCounter
	shed          metric.Int64ObservableCounter

	queueWait metric.Float64Histogram
	duration  metric.Float64Histogram

	// The attribute sets, built once in NewMetrics so that neither a
	// collection nor Observe builds one: poolAttrs and recordPool hold the
	// pool name alone; outcomeAttrs and recordRan, indexed by Outcome, the
	// pool name and the outcome (for statsOutcomes and ranOutcomes).
	poolAttrs    []metric.ObserveOption
	outcomeAttrs [bgpool.OutcomeHandedOff + 1][]metric.ObserveOption
	recordPool   []metric.RecordOption
	recordRan    [bgpool.OutcomeHandedOff + 1][]metric.RecordOption
}

// NewMetrics returns a Metrics for a pool named pool, which becomes the
// value of the bgpool.pool.name attribute on every measurement. It creates
// its instruments on a Meter named ScopeName, from the MeterProvider given
// with WithMeterProvider (by default the global one), and registers one
// callback that reads p.Stats() at collection time. Its histograms use
// DefaultBuckets unless WithQueueWaitBuckets or WithDurationBuckets say
// otherwise.
//
// NewMetrics returns an error, and no Metrics, when pool is empty or not
// valid UTF-8, when an option is nil or invalid, or when the Meter refuses
// an instrument or the callback.
func NewMetrics(pool string, opts ...MetricsOption) (*Metrics, error) {
	if err := checkName("NewMetrics", pool); err != nil {
		return nil, err
	}
	var o metricsOptions
	for i, opt := range opts {
		if opt == nil {
			return nil, fmt.Errorf("bgotel: NewMetrics: option %d is nil", i)
		}
		if err := opt.applyMetrics(&o); err != nil {
			return nil, err
		}
	}
	o.setDefaults()
	meter := o.meterProvider.Meter(ScopeName)

	m := &Metrics{}
	var errs []error
	upDown := func(name, unit, desc string) metric.Int64ObservableUpDownCounter {
		c, err := meter.Int64ObservableUpDownCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	counter := func(name, unit, desc string) metric.Int64ObservableCounter {
		c, err := meter.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	histogram := func(name, desc string, bounds []float64) metric.Float64Histogram {
		h, err := meter.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc),
			metric.WithExplicitBucketBoundaries(bounds...))
		errs = append(errs, err)
		return h
	}
	m.workers = upDown("bgpool.worker.limit", "{worker}",
		"The cap on tasks running at once on workers: the pool's size, or its last Tune.")
	m.running = upDown("bgpool.task.running", "{task}",
		"Tasks executing now, on workers and on submitters (CallerRuns).")
	m.queued = upDown("bgpool.queue.length", "{task}",
		"Tasks admitted and waiting for a worker.")
	m.queueCapacity = upDown("bgpool.queue.capacity", "{task}",
		"How many tasks the queue can hold.")
	m.waiting = upDown("bgpool.submit.waiting", "{call}",
		"Submit calls waiting for room in the queue, not yet admitted or refused.")
	m.tasks = counter("bgpool.tasks", "{task}",
		"Tasks that reached an outcome: completed, failed, panicked, dropped (expired tasks included), rejected, abandoned or handed_off.")
	m.shed = counter("bgpool.shed_requests", "{request}",
		"HTTP requests answered 503 by bgpool.Middleware's WithShedding without reaching the handler.")
	m.queueWait = histogram("bgpool.task.time_in_queue",
		"Time tasks waited between admission and their start, or their discarding from the queue.", o.queueWaitBuckets)
	m.duration = histogram("bgpool.task.duration",
		"Time tasks ran, by outcome: completed, failed, panicked, or abandoned by Shutdown while running.", o.durationBuckets)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("bgotel: NewMetrics(%q): %w", pool, err)
	}

	name := PoolNameKey.String(pool)
	poolSet := attribute.NewSet(name)
	m.poolAttrs = []metric.ObserveOption{metric.WithAttributeSet(poolSet)}
	m.recordPool = []metric.RecordOption{metric.WithAttributeSet(poolSet)}
	for _, out := range statsOutcomes {
		m.outcomeAttrs[out] = []metric.ObserveOption{
			metric.WithAttributeSet(attribute.NewSet(name, OutcomeKey.String(out.String()))),
		}
	}
	for _, out := range ranOutcomes {
		m.recordRan[out] = []metric.RecordOption{
			metric.WithAttributeSet(attribute.NewSet(name, OutcomeKey.String(out.String()))),
		}
	}

	reg, err := meter.RegisterCallback(m.collect,
		m.workers, m.running, m.queued, m.queueCapacity, m.waiting, m.tasks, m.shed)
	if err != nil {
		return nil, fmt.Errorf("bgotel: NewMetrics(%q): %w", pool, err)
	}
	m.reg = reg
	return m, nil
}

// checkName reports a pool name that is empty or not valid UTF-8.
func checkName(fn, pool string) error {
	if pool == "" {
		return fmt.Errorf("bgotel: %s(%q): pool name must not be empty", fn, pool)
	}
	if !utf8.ValidString(pool) {
		return fmt.Errorf("bgotel: %s(%q): pool name must be valid UTF-8", fn, pool)
	}
	return nil
}

// Watch makes the Metrics report p's Stats: the state instruments,
// bgpool.tasks and bgpool.shed_requests. Call it once p exists, with the
// pool whose observer is m.Observe. A later call replaces the pool (the
// counters then restart from the new pool's values, which a backend reads
// as a reset); Watch(nil) stops reporting them. Watch does not block.
func (m *Metrics) Watch(p *bgpool.Pool) {
	m.pool.Store(p)
}

// Unregister removes the Metrics' callback from its Meter, after which a
// collection reports nothing read from Stats. The histograms stay with the
// MeterProvider, which has no way to remove an instrument. Call it when a
// pool is gone for good but the MeterProvider lives on (in tests, say).
// It does not block on a collection in progress and is safe to call twice.
func (m *Metrics) Unregister() error {
	m.pool.Store(nil)
	if err := m.reg.Unregister(); err != nil {
		return fmt.Errorf("bgotel: Unregister: %w", err)
	}
	return nil
}

// collect observes the watched pool's Stats. It is the Meter's callback.
func (m *Metrics) collect(_ context.Context, o metric.Observer) error {
	p := m.pool.Load()
	if p == nil {
		return nil
	}
	s := p.Stats()
	o.ObserveInt64(m.workers, int64(s.Workers), m.poolAttrs...)
	o.ObserveInt64(m.running, int64(s.Running), m.poolAttrs...)
	o.ObserveInt64(m.queued, int64(s.Queued), m.poolAttrs...)
	o.ObserveInt64(m.queueCapacity, int64(s.QueueSize), m.poolAttrs...)
	o.ObserveInt64(m.waiting, int64(s.Waiting), m.poolAttrs...)
	counts := [...]uint64{s.Completed, s.Failed, s.Panicked, s.Dropped, s.Rejected, s.Abandoned, s.HandedOff}
	for i, out := range statsOutcomes {
		o.ObserveInt64(m.tasks, int64(counts[i]), m.outcomeAttrs[out]...)
	}
	o.ObserveInt64(m.shed, int64(s.Shed), m.poolAttrs...)
	return nil
}

// Observe records one task's time in queue and run time in the histograms.
// It is meant for bgpool.WithObserver: bgpool.New(n, bgpool.WithObserver(m.Observe)).
// It never blocks and builds no attribute set; its cost is the SDK's
// Record, twice (BenchmarkObserve).
//
//   - bgpool.task.time_in_queue records every task that was admitted: one
//     that ran (a task run by CallerRuns counts as waiting 0s), expired,
//     was discarded by DropOldest, was abandoned, or was handed off from
//     the queue at Shutdown. A rejected task, and one dropped or handed off
//     (Spill) on arrival, never waited and is not recorded.
//   - bgpool.task.duration records every task that ran, under its outcome;
//     a task abandoned while it ran is recorded when it returns, under
//     outcome "abandoned".
func (m *Metrics) Observe(ev bgpool.TaskEvent) {
	ctx := context.Background()
	switch ev.Outcome {
	case bgpool.OutcomeCompleted, bgpool.OutcomeFailed, bgpool.OutcomePanicked:
		m.queueWait.Record(ctx, ev.QueueWait.Seconds(), m.recordPool...)
		m.duration.Record(ctx, ev.RunTime.Seconds(), m.recordRan[ev.Outcome]...)
	case bgpool.OutcomeAbandoned:
		m.queueWait.Record(ctx, ev.QueueWait.Seconds(), m.recordPool...)
		if ev.Started {
			m.duration.Record(ctx, ev.RunTime.Seconds(), m.recordRan[ev.Outcome]...)
		}
	case bgpool.OutcomeExpired:
		m.queueWait.Record(ctx, ev.QueueWait.Seconds(), m.recordPool...)
	case bgpool.OutcomeDropped, bgpool.OutcomeHandedOff:
		if ev.Queued {
			m.queueWait.Record(ctx, ev.QueueWait.Seconds(), m.recordPool...)
		}
	}
	// OutcomeRejected, and any outcome a later bgpool adds, carry no timing.
}
