package bgotel_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"

	"github.com/bgpool/bgpool"
	bgotel "github.com/bgpool/bgpool/contrib/otel"
)

// stateNames are the UpDownCounters read from Stats, with the Stats field
// each reports.
var stateNames = []string{
	"bgpool.worker.limit", "bgpool.task.running", "bgpool.queue.length", "bgpool.queue.capacity", "bgpool.submit.waiting",
}

// assertState checks every UpDownCounter against s.
func assertState(t *testing.T, c collected, pool string, s bgpool.Stats) {
	t.Helper()
	assert.Equal(t, int64(s.Workers), c.value(t, "bgpool.worker.limit", pool), "bgpool.worker.limit is Stats.Workers")
	assert.Equal(t, int64(s.Running), c.value(t, "bgpool.task.running", pool), "bgpool.task.running is Stats.Running")
	assert.Equal(t, int64(s.Queued), c.value(t, "bgpool.queue.length", pool), "bgpool.queue.length is Stats.Queued")
	assert.Equal(t, int64(s.QueueSize), c.value(t, "bgpool.queue.capacity", pool), "bgpool.queue.capacity is Stats.QueueSize")
	assert.Equal(t, int64(s.Waiting), c.value(t, "bgpool.submit.waiting", pool), "bgpool.submit.waiting is Stats.Waiting")
	for _, name := range stateNames {
		_, monotonic := c.ints(t, name)
		assert.False(t, monotonic, "%s is an UpDownCounter", name)
	}
}

// assertCounters checks bgpool.tasks and bgpool.shed_requests against s.
func assertCounters(t *testing.T, c collected, pool string, s bgpool.Stats) {
	t.Helper()
	assert.Equal(t, map[string]int64{
		"completed":  int64(s.Completed),
		"failed":     int64(s.Failed),
		"panicked":   int64(s.Panicked),
		"dropped":    int64(s.Dropped),
		"rejected":   int64(s.Rejected),
		"abandoned":  int64(s.Abandoned),
		"handed_off": int64(s.HandedOff),
	}, c.byOutcome(t, "bgpool.tasks", pool), "bgpool.tasks by outcome is Stats' counters")
	assert.Equal(t, int64(s.Shed), c.value(t, "bgpool.shed_requests", pool), "bgpool.shed_requests is Stats.Shed")
	for _, name := range []string{"bgpool.tasks", "bgpool.shed_requests"} {
		_, monotonic := c.ints(t, name)
		assert.True(t, monotonic, "%s is a Counter", name)
	}
}

func TestMetricsAgreeWithStatsForAKnownMixOfOutcomes(t *testing.T) {
	reader, mp := newReader(t)
	m := newMetrics(t, "mail", bgotel.WithMeterProvider(mp))
	p := newPool(t, 1, bgpool.WithObserver(m.Observe), bgpool.WithQueueSize(2), bgpool.WithPolicy(bgpool.Drop))
	m.Watch(p)
	bg := context.Background()

	g := newGate()
	require.NoError(t, p.Submit(bg, g.task))
	<-g.started
	require.NoError(t, p.Submit(bg, func(context.Context) error { return errFail }))
	require.NoError(t, p.Submit(bg, func(context.Context) error { panic("boom") }))
	require.NoError(t, p.Submit(bg, func(context.Context) error { return nil }), "Drop drops silently")
	require.Error(t, p.Submit(bg, nil), "a nil task is rejected")

	c := collect(t, reader)
	s := p.Stats()
	require.Equal(t, bgpool.Stats{Workers: 1, Running: 1, Queued: 2, QueueSize: 2, Submitted: 5, Dropped: 1, Rejected: 1}, s,
		"the gate runs, two tasks wait, one was dropped and one rejected")
	assertState(t, c, "mail", s)
	assertCounters(t, c, "mail", s)

	g.open()
	shutdown(t, p)
	require.ErrorIs(t, p.Submit(bg, func(context.Context) error { return nil }), bgpool.ErrClosed)

	c = collect(t, reader)
	s = p.Stats()
	require.Equal(t, bgpool.Stats{Workers: 1, QueueSize: 2, Submitted: 6, Completed: 1, Failed: 1, Panicked: 1, Dropped: 1, Rejected: 2}, s)
	assertState(t, c, "mail", s)
	assertCounters(t, c, "mail", s)

	waits := c.histogram(t, "bgpool.task.time_in_queue")
	require.Len(t, waits, 1)
	assert.Equal(t, uint64(3), waits[""].Count, "one time in queue per task that ran; the dropped and rejected never waited")
	assert.Equal(t, attribute.NewSet(bgotel.PoolNameKey.String("mail")), waits[""].Attributes)
	durations := c.histogram(t, "bgpool.task.duration")
	for _, out := range []string{"completed", "failed", "panicked"} {
		assert.Equal(t, uint64(1), durations[out].Count, "one run time with outcome %q", out)
		attrs := durations[out].Attributes
		name, _ := attrs.Value(bgotel.PoolNameKey)
		assert.Equal(t, "mail", name.AsString())
	}
	assert.Len(t, durations, 3, "only outcomes of tasks that ran")
	assert.Equal(t, "s", c["bgpool.task.duration"].Unit)
	assert.Equal(t, "s", c["bgpool.task.time_in_queue"].Unit)
}

func TestMetricsReportWaitingSubmitters(t *testing.T) {
	reader, mp := newReader(t)
	m := newMetrics(t, "mail", bgotel.WithMeterProvider(mp))
	p := newPool(t, 1, bgpool.WithObserver(m.Observe), bgpool.WithQueueSize(1), bgpool.WithPolicy(bgpool.Block))
	m.Watch(p)
	bg := context.Background()

	g := newGate()
	require.NoError(t, p.Submit(bg, g.task))
	<-g.started
	require.NoError(t, p.Submit(bg, func(context.Context) error { return nil }))
	submitted := make(chan error, 1)
	go func() { submitted <- p.Submit(bg, func(context.Context) error { return nil }) }()
	waitStats(t, p, func(s bgpool.Stats) bool { return s.Waiting == 1 })

	c := collect(t, reader)
	assert.Equal(t, int64(1), c.value(t, "bgpool.submit.waiting", "mail"), "the Submit blocked for room")
	assert.Equal(t, int64(1), c.value(t, "bgpool.queue.length", "mail"))
	assert.Equal(t, int64(1), c.value(t, "bgpool.task.running", "mail"))

	g.open()
	require.NoError(t, <-submitted)
	shutdown(t, p)
	c = collect(t, reader)
	assertState(t, c, "mail", p.Stats())
	assertCounters(t, c, "mail", p.Stats())
	assert.Equal(t, int64(3), c.byOutcome(t, "bgpool.tasks", "mail")["completed"])
}

func TestMetricsCountShedRequests(t *testing.T) {
	reader, mp := newReader(t)
	m := newMetrics(t, "mail", bgotel.WithMeterProvider(mp))
	p := newPool(t, 1, bgpool.WithObserver(m.Observe), bgpool.WithQueueSize(0))
	m.Watch(p)
	g := newGate()
	require.NoError(t, p.Submit(context.Background(), g.task))
	defer g.open()
	<-g.started // the only worker is busy and there is no queue: the pool is saturated

	var handled atomic.Bool
	h := bgpool.Middleware(p, bgpool.WithShedding(time.Second))(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		handled.Store(true)
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "the request was shed")
	require.False(t, handled.Load(), "the handler did not run")

	c := collect(t, reader)
	assert.Equal(t, int64(1), c.value(t, "bgpool.shed_requests", "mail"))
	assertCounters(t, c, "mail", p.Stats())
}

func TestUnwatchedMetricsReportOnlyHistograms(t *testing.T) {
	reader, mp := newReader(t)
	m := newMetrics(t, "mail", bgotel.WithMeterProvider(mp))
	m.Observe(bgpool.TaskEvent{Outcome: bgpool.OutcomeCompleted, Queued: true, Started: true, RunTime: time.Second})

	statsNames := append(stateNames[:len(stateNames):len(stateNames)], "bgpool.tasks", "bgpool.shed_requests")
	c := collect(t, reader)
	for _, name := range statsNames {
		assert.NotContains(t, c, name, "before Watch")
	}
	assert.Contains(t, c, "bgpool.task.duration")

	p := newPool(t, 2, bgpool.WithObserver(m.Observe))
	m.Watch(p)
	c = collect(t, reader)
	for _, name := range statsNames {
		assert.Contains(t, c, name, "after Watch")
	}

	m.Watch(nil)
	c = collect(t, reader)
	for _, name := range statsNames {
		assert.NotContains(t, c, name, "after Watch(nil)")
	}
}

func TestUnregisterStopsTheStatsCallback(t *testing.T) {
	reader, mp := newReader(t)
	m := newMetrics(t, "mail", bgotel.WithMeterProvider(mp))
	m.Watch(newPool(t, 2, bgpool.WithObserver(m.Observe)))
	require.Contains(t, collect(t, reader), "bgpool.tasks")

	require.NoError(t, m.Unregister())
	assert.NotContains(t, collect(t, reader), "bgpool.tasks")
	assert.NoError(t, m.Unregister(), "a second Unregister")
}

func TestTwoPoolsShareAMeterProvider(t *testing.T) {
	reader, mp := newReader(t)
	mail, sms := newMetrics(t, "mail", bgotel.WithMeterProvider(mp)), newMetrics(t, "sms", bgotel.WithMeterProvider(mp))
	mail.Watch(newPool(t, 8, bgpool.WithObserver(mail.Observe), bgpool.WithQueueSize(100)))
	sms.Watch(newPool(t, 2, bgpool.WithObserver(sms.Observe)))

	c := collect(t, reader)
	points, _ := c.ints(t, "bgpool.worker.limit")
	workers := map[string]int64{}
	for _, p := range points {
		name, _ := p.attrs.Value(bgotel.PoolNameKey)
		workers[name.AsString()] = p.value
	}
	assert.Equal(t, map[string]int64{"mail": 8, "sms": 2}, workers)
	tasks, _ := c.ints(t, "bgpool.tasks")
	assert.Len(t, tasks, 2*7, "seven outcomes per pool")
}

func TestMetricsUseTheirBuckets(t *testing.T) {
	reader, mp := newReader(t)
	m := newMetrics(t, "reports", bgotel.WithMeterProvider(mp),
		bgotel.WithDurationBuckets(1, 10, 60, 300, 900, 1800, 3600),
	)
	m.Observe(bgpool.TaskEvent{Outcome: bgpool.OutcomeCompleted, Queued: true, Started: true,
		QueueWait: 20 * time.Minute, RunTime: 7 * time.Minute})
	c := collect(t, reader)
	d := c.histogram(t, "bgpool.task.duration")["completed"]
	assert.Equal(t, []float64{1, 10, 60, 300, 900, 1800, 3600}, d.Bounds)
	assert.Equal(t, []uint64{0, 0, 0, 0, 1, 0, 0, 0}, d.BucketCounts, "7 minutes falls in (300, 900]")
	w := c.histogram(t, "bgpool.task.time_in_queue")[""]
	assert.Equal(t, bgotel.DefaultBuckets(), w.Bounds, "the default")
	assert.InDelta(t, 1200, w.Sum, 1e-9)
}

func TestObserveRecordsWhatTheOutcomeCarries(t *testing.T) {
	tests := []struct {
		name      string
		ev        bgpool.TaskEvent
		waits     uint64
		durations map[string]uint64
	}{
		{"a rejected task is not recorded", bgpool.TaskEvent{Outcome: bgpool.OutcomeRejected}, 0, nil},
		{"a task dropped on arrival never waited", bgpool.TaskEvent{Outcome: bgpool.OutcomeDropped}, 0, nil},
		{"a task dropped from the queue waited", bgpool.TaskEvent{Outcome: bgpool.OutcomeDropped, Queued: true, QueueWait: time.Second}, 1, nil},
		{"an expired task waited", bgpool.TaskEvent{Outcome: bgpool.OutcomeExpired, Queued: true, QueueWait: time.Second}, 1, nil},
		{"a task abandoned in the queue waited", bgpool.TaskEvent{Outcome: bgpool.OutcomeAbandoned, Queued: true}, 1, nil},
		{"a task abandoned while running ran", bgpool.TaskEvent{Outcome: bgpool.OutcomeAbandoned, Queued: true, Started: true},
			1, map[string]uint64{"abandoned": 1}},
		{"a failed task ran", bgpool.TaskEvent{Outcome: bgpool.OutcomeFailed, Queued: true, Started: true},
			1, map[string]uint64{"failed": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reader, mp := newReader(t)
			m := newMetrics(t, "mail", bgotel.WithMeterProvider(mp))
			m.Observe(tt.ev)
			c := collect(t, reader)
			var waits uint64
			if _, ok := c["bgpool.task.time_in_queue"]; ok {
				waits = c.histogram(t, "bgpool.task.time_in_queue")[""].Count
			}
			assert.Equal(t, tt.waits, waits, "time in queue count")
			durations := map[string]uint64{}
			if _, ok := c["bgpool.task.duration"]; ok {
				for out, dp := range c.histogram(t, "bgpool.task.duration") {
					durations[out] = dp.Count
				}
			}
			if tt.durations == nil {
				tt.durations = map[string]uint64{}
			}
			assert.Equal(t, tt.durations, durations, "durations by outcome")
		})
	}
}

func TestHistogramsRecordTimeInQueueAndRunTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reader, mp := newReader(t)
		m := newMetrics(t, "mail", bgotel.WithMeterProvider(mp))
		p := newPool(t, 1, bgpool.WithObserver(m.Observe), bgpool.WithQueueSize(2))
		m.Watch(p)
		bg := context.Background()
		// One worker runs them in order: 1s then 2s; they wait 0s and 1s.
		require.NoError(t, p.Submit(bg, func(context.Context) error { time.Sleep(time.Second); return nil }))
		require.NoError(t, p.Submit(bg, func(context.Context) error { time.Sleep(2 * time.Second); return errFail }))
		shutdown(t, p)

		c := collect(t, reader)
		waits := c.histogram(t, "bgpool.task.time_in_queue")[""]
		assert.Equal(t, uint64(2), waits.Count)
		assert.InDelta(t, 1.0, waits.Sum, 0, "0s + 1s")
		assert.Equal(t, []uint64{1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0}, waits.BucketCounts, "one in (0, 1ms], one in (500ms, 1s]")
		durations := c.histogram(t, "bgpool.task.duration")
		assert.Equal(t, uint64(1), durations["completed"].Count)
		assert.InDelta(t, 1.0, durations["completed"].Sum, 0)
		assert.Equal(t, uint64(1), durations["failed"].Count)
		assert.InDelta(t, 2.0, durations["failed"].Sum, 0)
	})
}
