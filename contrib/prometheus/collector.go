// Package bgprom exports a bgpool.Pool's state and task outcomes as
// Prometheus metrics.
//
//	c, err := bgprom.New("mail")
//	if err != nil {
//		return err
//	}
//	p, err := bgpool.New(8, bgpool.WithObserver(c.Observe))
//	if err != nil {
//		return err
//	}
//	c.Watch(p)
//	prometheus.MustRegister(c)
//
// A Collector gets its figures from two places. The gauges and the three
// counters are read from p.Stats() at scrape time, so they always agree with
// Stats and cost nothing between scrapes. The two histograms are fed per
// task by Observe, the pool's observer hook (bgpool.WithObserver), since
// Stats keeps no timings.
//
// The metrics, each with a constant pool label naming the pool:
//
//	bgpool_workers                gauge      the current cap on tasks running at once (Stats.Workers), moved by Tune or WithAdaptiveConcurrency
//	bgpool_running                gauge      tasks executing on workers (Stats.Running)
//	bgpool_queued                 gauge      tasks waiting for a worker (Stats.Queued)
//	bgpool_queue_capacity         gauge      the queue's capacity (Stats.QueueSize)
//	bgpool_queue_delay_seconds    gauge      the queue wait of the task a worker took last (Stats.QueueDelay)
//	bgpool_tasks_total            counter    tasks that reached an outcome, by outcome
//	bgpool_tasks_dropped_total    counter    dropped tasks, by reason: queue_wait, queue_delay, other
//	bgpool_requests_shed_total    counter    HTTP requests answered 503 by WithShedding (Stats.Shed)
//	bgpool_queue_wait_seconds     histogram  time from admission to start or discarding
//	bgpool_task_duration_seconds  histogram  run time of tasks that ran, by outcome
//
// bgpool_queue_delay_seconds is measured only by a pool with
// bgpool.WithQueueDelayTarget or bgpool.WithAdaptiveConcurrency, and is 0
// otherwise and while the queue is empty. bgpool_tasks_dropped_total splits
// bgpool_tasks_total{outcome="dropped"}: reason "queue_wait" counts tasks
// dropped for waiting longer than WithMaxQueueWait (Stats.Expired),
// "queue_delay" those dropped at the head of a standing queue by
// WithQueueDelayTarget (Stats.Delayed), and "other" the rest (Drop,
// DropOldest and Spill, a failing Limiter, Job.Do taking a task back, a
// WithAfterResponse handler that panicked); the three add up to the dropped
// outcome in every scrape.
//
// It lives in its own module, github.com/bgpool/bgpool/contrib/prometheus,
// so that bgpool itself does not depend on the Prometheus client.
package bgprom

import (
	"fmt"
	"sync/atomic"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bgpool/bgpool"
)

// statsOutcomes are the outcomes that bgpool_tasks_total reports, one per
// outcome counter in bgpool.Stats, so that once the pool is quiet they add up
// to Stats.Submitted. OutcomeExpired is not among them: Stats counts an
// expired task Dropped, and so does bgpool_tasks_total;
// bgpool_tasks_dropped_total tells the reasons apart, from Stats.Expired and
// Stats.Delayed.
//
// Why not count expired tasks through Observe and subtract them from
// Dropped? The pool counts a task in Stats before it calls the observer, so a
// scrape in between would see the task as dropped, and the next one would
// see dropped go down: a counter that decreases reads as a reset to
// Prometheus. Stats' own Expired and Delayed are counted with Dropped, in
// the same snapshot. bgpool_queue_wait_seconds does include expired tasks'
// waits.
var statsOutcomes = [...]bgpool.Outcome{
	bgpool.OutcomeCompleted,
	bgpool.OutcomeFailed,
	bgpool.OutcomePanicked,
	bgpool.OutcomeDropped,
	bgpool.OutcomeRejected,
	bgpool.OutcomeAbandoned,
	bgpool.OutcomeHandedOff,
}

// ranOutcomes are the outcomes of a task that ran, which label
// bgpool_task_duration_seconds.
var ranOutcomes = [...]bgpool.Outcome{
	bgpool.OutcomeCompleted,
	bgpool.OutcomeFailed,
	bgpool.OutcomePanicked,
	bgpool.OutcomeAbandoned,
}

// A Collector is a prometheus.Collector for one bgpool.Pool. Create one with
// New, pass its Observe method to bgpool.New with bgpool.WithObserver, hand
// it the pool with Watch, and register it. The zero Collector is not usable.
// All methods are safe for concurrent use.
//
// Before Watch, and after Watch(nil), Collect reports the histograms only:
// the gauges and the counters are left out rather than reported as zeros,
// which would read as a pool with no workers.
//
// Several pools are told apart by the pool label that New takes: register one
// Collector per pool on the same registry. Registering two Collectors with
// the same pool name fails with a prometheus.AlreadyRegisteredError.
type Collector struct {
	pool atomic.Pointer[bgpool.Pool]

	workers       *prometheus.Desc
	running       *prometheus.Desc
	queued        *prometheus.Desc
	queueCapacity *prometheus.Desc
	queueDelay    *prometheus.Desc
	tasks         *prometheus.Desc
	dropped       *prometheus.Desc
	shed          *prometheus.Desc

	queueWait   prometheus.Histogram
	durationVec *prometheus.HistogramVec
	// duration holds durationVec's child for each outcome in ranOutcomes,
	// indexed by Outcome and resolved once in New, so that Observe does not
	// hash label values; the other entries are nil.
	duration [bgpool.OutcomeAbandoned + 1]prometheus.Observer
}

var _ prometheus.Collector = (*Collector)(nil)

// New returns a Collector for a pool named pool, which becomes the value of
// every metric's pool label. Its histograms use DefaultBuckets unless
// WithQueueWaitBuckets or WithDurationBuckets say otherwise.
//
// New returns an error, and no Collector, when pool is empty or not valid
// UTF-8, or when an option is nil or invalid. It registers nothing: pass the
// Collector to a prometheus.Registerer yourself.
func New(pool string, opts ...Option) (*Collector, error) {
	if pool == "" {
		return nil, fmt.Errorf("bgprom: New(%q): pool name must not be empty", pool)
	}
	if !utf8.ValidString(pool) {
		return nil, fmt.Errorf("bgprom: New(%q): pool name must be valid UTF-8", pool)
	}
	var o options
	for i, opt := range opts {
		if opt == nil {
			return nil, fmt.Errorf("bgprom: New: option %d is nil", i)
		}
		if err := opt.apply(&o); err != nil {
			return nil, err
		}
	}
	o.setDefaults()

	labels := prometheus.Labels{"pool": pool}
	gauge := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, nil, labels)
	}
	c := &Collector{
		workers:       gauge("bgpool_workers", "The current cap on tasks running at once: the pool's size, moved by Tune or WithAdaptiveConcurrency."),
		running:       gauge("bgpool_running", "Tasks executing on workers now."),
		queued:        gauge("bgpool_queued", "Tasks admitted and waiting for a worker."),
		queueCapacity: gauge("bgpool_queue_capacity", "How many tasks the queue can hold."),
		queueDelay: gauge("bgpool_queue_delay_seconds",
			"The queue wait of the task a worker took last; 0 while the queue is empty, and without WithQueueDelayTarget or WithAdaptiveConcurrency."),
		tasks: prometheus.NewDesc("bgpool_tasks_total",
			"Tasks that reached an outcome: completed, failed, panicked, dropped (expired tasks included), rejected, abandoned or handed_off.",
			[]string{"outcome"}, labels),
		// The reasons split outcome="dropped" of bgpool_tasks_total; a
		// counter of its own, so that bgpool_tasks_total still adds up to
		// Stats.Submitted.
		dropped: prometheus.NewDesc("bgpool_tasks_dropped_total",
			"Tasks dropped, by reason: queue_wait (waited longer than WithMaxQueueWait), queue_delay (dropped from a standing queue by WithQueueDelayTarget), or other (policies, a failing limiter, Job.Do).",
			[]string{"reason"}, labels),
		// Shed requests are not tasks: they get a counter of their own
		// rather than an outcome of bgpool_tasks_total, whose outcomes add
		// up to Stats.Submitted.
		shed: prometheus.NewDesc("bgpool_requests_shed_total",
			"HTTP requests answered 503 by bgpool.Middleware's WithShedding without reaching the handler.",
			nil, labels),
		queueWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:        "bgpool_queue_wait_seconds",
			Help:        "Time tasks waited between admission and their start, or their discarding from the queue.",
			ConstLabels: labels,
			Buckets:     o.queueWaitBuckets,
		}),
		durationVec: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:        "bgpool_task_duration_seconds",
			Help:        "Time tasks ran, by outcome: completed, failed, panicked, or abandoned by Shutdown while running.",
			ConstLabels: labels,
			Buckets:     o.durationBuckets,
		}, []string{"outcome"}),
	}
	for _, out := range ranOutcomes {
		c.duration[out] = c.durationVec.WithLabelValues(out.String())
	}
	return c, nil
}

// Watch makes the Collector report p's Stats: the gauges, bgpool_tasks_total,
// bgpool_tasks_dropped_total and bgpool_requests_shed_total. Call it once p exists, with the pool whose
// observer is c.Observe. A later call replaces the pool (Prometheus reads the
// counters' restart from the new pool's values as a counter reset);
// Watch(nil) stops reporting them. Watch does not block.
func (c *Collector) Watch(p *bgpool.Pool) {
	c.pool.Store(p)
}

// Observe records one task's queue wait and run time in the histograms. It
// is meant for bgpool.WithObserver: bgpool.New(n, bgpool.WithObserver(c.Observe)).
// It never blocks, takes no lock and allocates nothing: about 30ns per task
// on a 2-core machine, from any number of goroutines (BenchmarkObserve).
//
//   - bgpool_queue_wait_seconds observes every task that was admitted: one
//     that ran (a task run by CallerRuns counts as waiting 0s), expired,
//     was discarded by DropOldest, was abandoned, or was handed off from
//     the queue at Shutdown. A rejected task, and one dropped or handed off
//     (Spill) on arrival, never waited and is not observed.
//   - bgpool_task_duration_seconds observes every task that ran, under its
//     outcome; a task abandoned while it ran is observed when it returns,
//     under outcome "abandoned".
func (c *Collector) Observe(ev bgpool.TaskEvent) {
	switch ev.Outcome {
	case bgpool.OutcomeCompleted, bgpool.OutcomeFailed, bgpool.OutcomePanicked:
		c.queueWait.Observe(ev.QueueWait.Seconds())
		c.duration[ev.Outcome].Observe(ev.RunTime.Seconds())
	case bgpool.OutcomeAbandoned:
		c.queueWait.Observe(ev.QueueWait.Seconds())
		if ev.Started {
			c.duration[ev.Outcome].Observe(ev.RunTime.Seconds())
		}
	case bgpool.OutcomeExpired:
		c.queueWait.Observe(ev.QueueWait.Seconds())
	case bgpool.OutcomeDropped, bgpool.OutcomeHandedOff:
		if ev.Queued {
			c.queueWait.Observe(ev.QueueWait.Seconds())
		}
	}
	// OutcomeRejected, and any outcome a later bgpool adds, carry no timing.
}

// Describe sends the descriptors of every metric the Collector may report,
// whether or not it watches a pool; it blocks only on ch. It implements
// prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.workers
	ch <- c.running
	ch <- c.queued
	ch <- c.queueCapacity
	ch <- c.queueDelay
	ch <- c.tasks
	ch <- c.dropped
	ch <- c.shed
	c.queueWait.Describe(ch)
	c.durationVec.Describe(ch)
}

// Collect sends the current metrics: the gauges and the counters from one
// call to the watched pool's Stats (a brief lock in the pool; it never waits
// for tasks), so that they agree with one another, and the histograms. It
// implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	if p := c.pool.Load(); p != nil {
		s := p.Stats()
		ch <- prometheus.MustNewConstMetric(c.workers, prometheus.GaugeValue, float64(s.Workers))
		ch <- prometheus.MustNewConstMetric(c.running, prometheus.GaugeValue, float64(s.Running))
		ch <- prometheus.MustNewConstMetric(c.queued, prometheus.GaugeValue, float64(s.Queued))
		ch <- prometheus.MustNewConstMetric(c.queueCapacity, prometheus.GaugeValue, float64(s.QueueSize))
		ch <- prometheus.MustNewConstMetric(c.queueDelay, prometheus.GaugeValue, s.QueueDelay.Seconds())
		counts := [...]uint64{s.Completed, s.Failed, s.Panicked, s.Dropped, s.Rejected, s.Abandoned, s.HandedOff}
		for i, out := range statsOutcomes {
			ch <- prometheus.MustNewConstMetric(c.tasks, prometheus.CounterValue, float64(counts[i]), out.String())
		}
		// Expired and Delayed are parts of Dropped in the same snapshot, so
		// other never goes negative, and never down between scrapes.
		other := s.Dropped - s.Expired - s.Delayed
		ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(s.Expired), "queue_wait")
		ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(s.Delayed), "queue_delay")
		ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(other), "other")
		ch <- prometheus.MustNewConstMetric(c.shed, prometheus.CounterValue, float64(s.Shed))
	}
	c.queueWait.Collect(ch)
	c.durationVec.Collect(ch)
}
