package bgprom_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bgpool/bgpool"
	bgprom "github.com/bgpool/bgpool/contrib/prometheus"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent())
}

var errFail = errors.New("fail")

// newCollector returns a Collector for a pool named name, failing the test on
// an error.
func newCollector(t *testing.T, name string, opts ...bgprom.Option) *bgprom.Collector {
	t.Helper()
	c, err := bgprom.New(name, opts...)
	require.NoError(t, err)
	return c
}

// newPool returns a pool observed and watched by c, with a quiet error
// handler, shut down when the test ends.
func newPool(t *testing.T, c *bgprom.Collector, size int, opts ...bgpool.Option) *bgpool.Pool {
	t.Helper()
	opts = append([]bgpool.Option{
		bgpool.WithObserver(c.Observe),
		bgpool.WithErrorHandler(func(context.Context, error) {}),
	}, opts...)
	p, err := bgpool.New(size, opts...)
	require.NoError(t, err)
	c.Watch(p)
	t.Cleanup(func() { shutdown(t, p) })
	return p
}

func shutdown(t *testing.T, p *bgpool.Pool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	assert.NoError(t, p.Shutdown(ctx))
}

// sleeper returns a task that sleeps for d and then returns err.
func sleeper(d time.Duration, err error) bgpool.Task {
	return func(context.Context) error {
		time.Sleep(d)
		return err
	}
}

// histogram returns the sample count and sum of the histogram series name
// (with outcome, when not empty) that c reports.
func histogram(t *testing.T, c prometheus.Collector, name, outcome string) (count uint64, sum float64) {
	t.Helper()
	m := series(t, c, name, "outcome", outcome)
	return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
}

const gaugesHelp = `
# HELP bgpool_workers The current cap on tasks running at once: the pool's size, moved by Tune or WithAdaptiveConcurrency.
# TYPE bgpool_workers gauge
# HELP bgpool_running Tasks executing on workers now.
# TYPE bgpool_running gauge
# HELP bgpool_queued Tasks admitted and waiting for a worker.
# TYPE bgpool_queued gauge
# HELP bgpool_queue_capacity How many tasks the queue can hold.
# TYPE bgpool_queue_capacity gauge
`

const tasksHelp = `
# HELP bgpool_tasks_total Tasks that reached an outcome: completed, failed, panicked, dropped (expired tasks included), rejected, abandoned or handed_off.
# TYPE bgpool_tasks_total counter
`

const shedHelp = `
# HELP bgpool_requests_shed_total HTTP requests answered 503 by bgpool.Middleware's WithShedding without reaching the handler.
# TYPE bgpool_requests_shed_total counter
`

var gaugeNames = []string{"bgpool_workers", "bgpool_running", "bgpool_queued", "bgpool_queue_capacity"}

// statsNames are the metrics that come from Stats: the gauges and the
// counters.
var statsNames = append(gaugeNames[:len(gaugeNames):len(gaugeNames)],
	"bgpool_queue_delay_seconds", "bgpool_tasks_total", "bgpool_tasks_dropped_total", "bgpool_requests_shed_total")

func TestCollectorReportsAKnownWorkload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCollector(t, "mail")
		p := newPool(t, c, 1, bgpool.WithQueueSize(7), bgpool.WithPolicy(bgpool.Reject))
		bg := context.Background()

		// One worker runs them in order: 5 complete after 1s each, 2 fail
		// after 2s each, 1 panics at once. Their queue waits are 0, 1, 2, 3,
		// 4, 5, 7 and 9 seconds.
		for range 5 {
			require.NoError(t, p.Submit(bg, sleeper(time.Second, nil)))
		}
		for range 2 {
			require.NoError(t, p.Submit(bg, sleeper(2*time.Second, errFail)))
		}
		require.NoError(t, p.Submit(bg, func(context.Context) error { panic("boom") }))
		for range 2 {
			require.ErrorIs(t, p.Submit(bg, sleeper(0, nil)), bgpool.ErrOverloaded)
		}
		synctest.Wait()

		err := testutil.CollectAndCompare(c, strings.NewReader(gaugesHelp+`
bgpool_workers{pool="mail"} 1
bgpool_running{pool="mail"} 1
bgpool_queued{pool="mail"} 7
bgpool_queue_capacity{pool="mail"} 7
`), gaugeNames...)
		assert.NoError(t, err, "while the first task runs")

		time.Sleep(time.Minute)
		synctest.Wait()
		shutdown(t, p)

		err = testutil.CollectAndCompare(c, strings.NewReader(gaugesHelp+`
bgpool_workers{pool="mail"} 1
bgpool_running{pool="mail"} 0
bgpool_queued{pool="mail"} 0
bgpool_queue_capacity{pool="mail"} 7
`+tasksHelp+`
bgpool_tasks_total{outcome="abandoned",pool="mail"} 0
bgpool_tasks_total{outcome="handed_off",pool="mail"} 0
bgpool_tasks_total{outcome="completed",pool="mail"} 5
bgpool_tasks_total{outcome="dropped",pool="mail"} 0
bgpool_tasks_total{outcome="failed",pool="mail"} 2
bgpool_tasks_total{outcome="panicked",pool="mail"} 1
bgpool_tasks_total{outcome="rejected",pool="mail"} 2
`), append(gaugeNames, "bgpool_tasks_total")...)
		assert.NoError(t, err, "after Shutdown")

		err = testutil.CollectAndCompare(c, strings.NewReader(`
# HELP bgpool_queue_wait_seconds Time tasks waited between admission and their start, or their discarding from the queue.
# TYPE bgpool_queue_wait_seconds histogram
bgpool_queue_wait_seconds_bucket{pool="mail",le="0.001"} 1
bgpool_queue_wait_seconds_bucket{pool="mail",le="0.005"} 1
bgpool_queue_wait_seconds_bucket{pool="mail",le="0.01"} 1
bgpool_queue_wait_seconds_bucket{pool="mail",le="0.05"} 1
bgpool_queue_wait_seconds_bucket{pool="mail",le="0.1"} 1
bgpool_queue_wait_seconds_bucket{pool="mail",le="0.5"} 1
bgpool_queue_wait_seconds_bucket{pool="mail",le="1"} 2
bgpool_queue_wait_seconds_bucket{pool="mail",le="2.5"} 3
bgpool_queue_wait_seconds_bucket{pool="mail",le="5"} 6
bgpool_queue_wait_seconds_bucket{pool="mail",le="10"} 8
bgpool_queue_wait_seconds_bucket{pool="mail",le="30"} 8
bgpool_queue_wait_seconds_bucket{pool="mail",le="60"} 8
bgpool_queue_wait_seconds_bucket{pool="mail",le="120"} 8
bgpool_queue_wait_seconds_bucket{pool="mail",le="300"} 8
bgpool_queue_wait_seconds_bucket{pool="mail",le="+Inf"} 8
bgpool_queue_wait_seconds_sum{pool="mail"} 31
bgpool_queue_wait_seconds_count{pool="mail"} 8
`), "bgpool_queue_wait_seconds")
		assert.NoError(t, err, "queue wait")

		for _, tc := range []struct {
			outcome string
			count   uint64
			sum     float64
		}{
			{"completed", 5, 5},
			{"failed", 2, 4},
			{"panicked", 1, 0},
			{"abandoned", 0, 0},
		} {
			count, sum := histogram(t, c, "bgpool_task_duration_seconds", tc.outcome)
			assert.Equal(t, tc.count, count, "task duration count for outcome %q", tc.outcome)
			assert.Equal(t, tc.sum, sum, "task duration sum for outcome %q", tc.outcome)
		}
		err = testutil.CollectAndCompare(c, strings.NewReader(`
# HELP bgpool_task_duration_seconds Time tasks ran, by outcome: completed, failed, panicked, or abandoned by Shutdown while running.
# TYPE bgpool_task_duration_seconds histogram
bgpool_task_duration_seconds_bucket{outcome="abandoned",pool="mail",le="0.001"} 0
bgpool_task_duration_seconds_bucket{outcome="abandoned",pool="mail",le="0.005"} 0
bgpool_task_duration_seconds_bucket{outcome="abandoned",pool="mail",le="0.01"} 0
bgpool_task_duration_seconds_bucket{outcome="abandoned",pool="mail",le="0.05"} 0
bgpool_task_duration_seconds_bucket{outcome="abandoned",pool="mail",le="0.1"} 0
bgpool_task_duration_seconds_bucket{outcome="abandoned",pool="mail",le="0.5"} 0
bgpool_task_duration_seconds_bucket{outcome="abandoned",pool="mail",le="1"} 0
bgpool_task_duration_seconds_bucket{outcome="abandoned",pool="mail",le="2.5"} 0
bgpool_task_duration_seconds_bucket{outcome="abandoned",pool="mail",le="5"} 0
bgpool_task_duration_seconds_bucket{outcome="abandoned",pool="mail",le="10"} 0
bgpool_task_duration_seconds_bucket{outcome="abandoned",pool="mail",le="30"} 0
bgpool_task_duration_seconds_bucket{outcome="abandoned",pool="mail",le="60"} 0
bgpool_task_duration_seconds_bucket{outcome="abandoned",pool="mail",le="120"} 0
bgpool_task_duration_seconds_bucket{outcome="abandoned",pool="mail",le="300"} 0
bgpool_task_duration_seconds_bucket{outcome="abandoned",pool="mail",le="+Inf"} 0
bgpool_task_duration_seconds_sum{outcome="abandoned",pool="mail"} 0
bgpool_task_duration_seconds_count{outcome="abandoned",pool="mail"} 0
bgpool_task_duration_seconds_bucket{outcome="completed",pool="mail",le="0.001"} 0
bgpool_task_duration_seconds_bucket{outcome="completed",pool="mail",le="0.005"} 0
bgpool_task_duration_seconds_bucket{outcome="completed",pool="mail",le="0.01"} 0
bgpool_task_duration_seconds_bucket{outcome="completed",pool="mail",le="0.05"} 0
bgpool_task_duration_seconds_bucket{outcome="completed",pool="mail",le="0.1"} 0
bgpool_task_duration_seconds_bucket{outcome="completed",pool="mail",le="0.5"} 0
bgpool_task_duration_seconds_bucket{outcome="completed",pool="mail",le="1"} 5
bgpool_task_duration_seconds_bucket{outcome="completed",pool="mail",le="2.5"} 5
bgpool_task_duration_seconds_bucket{outcome="completed",pool="mail",le="5"} 5
bgpool_task_duration_seconds_bucket{outcome="completed",pool="mail",le="10"} 5
bgpool_task_duration_seconds_bucket{outcome="completed",pool="mail",le="30"} 5
bgpool_task_duration_seconds_bucket{outcome="completed",pool="mail",le="60"} 5
bgpool_task_duration_seconds_bucket{outcome="completed",pool="mail",le="120"} 5
bgpool_task_duration_seconds_bucket{outcome="completed",pool="mail",le="300"} 5
bgpool_task_duration_seconds_bucket{outcome="completed",pool="mail",le="+Inf"} 5
bgpool_task_duration_seconds_sum{outcome="completed",pool="mail"} 5
bgpool_task_duration_seconds_count{outcome="completed",pool="mail"} 5
bgpool_task_duration_seconds_bucket{outcome="failed",pool="mail",le="0.001"} 0
bgpool_task_duration_seconds_bucket{outcome="failed",pool="mail",le="0.005"} 0
bgpool_task_duration_seconds_bucket{outcome="failed",pool="mail",le="0.01"} 0
bgpool_task_duration_seconds_bucket{outcome="failed",pool="mail",le="0.05"} 0
bgpool_task_duration_seconds_bucket{outcome="failed",pool="mail",le="0.1"} 0
bgpool_task_duration_seconds_bucket{outcome="failed",pool="mail",le="0.5"} 0
bgpool_task_duration_seconds_bucket{outcome="failed",pool="mail",le="1"} 0
bgpool_task_duration_seconds_bucket{outcome="failed",pool="mail",le="2.5"} 2
bgpool_task_duration_seconds_bucket{outcome="failed",pool="mail",le="5"} 2
bgpool_task_duration_seconds_bucket{outcome="failed",pool="mail",le="10"} 2
bgpool_task_duration_seconds_bucket{outcome="failed",pool="mail",le="30"} 2
bgpool_task_duration_seconds_bucket{outcome="failed",pool="mail",le="60"} 2
bgpool_task_duration_seconds_bucket{outcome="failed",pool="mail",le="120"} 2
bgpool_task_duration_seconds_bucket{outcome="failed",pool="mail",le="300"} 2
bgpool_task_duration_seconds_bucket{outcome="failed",pool="mail",le="+Inf"} 2
bgpool_task_duration_seconds_sum{outcome="failed",pool="mail"} 4
bgpool_task_duration_seconds_count{outcome="failed",pool="mail"} 2
bgpool_task_duration_seconds_bucket{outcome="panicked",pool="mail",le="0.001"} 1
bgpool_task_duration_seconds_bucket{outcome="panicked",pool="mail",le="0.005"} 1
bgpool_task_duration_seconds_bucket{outcome="panicked",pool="mail",le="0.01"} 1
bgpool_task_duration_seconds_bucket{outcome="panicked",pool="mail",le="0.05"} 1
bgpool_task_duration_seconds_bucket{outcome="panicked",pool="mail",le="0.1"} 1
bgpool_task_duration_seconds_bucket{outcome="panicked",pool="mail",le="0.5"} 1
bgpool_task_duration_seconds_bucket{outcome="panicked",pool="mail",le="1"} 1
bgpool_task_duration_seconds_bucket{outcome="panicked",pool="mail",le="2.5"} 1
bgpool_task_duration_seconds_bucket{outcome="panicked",pool="mail",le="5"} 1
bgpool_task_duration_seconds_bucket{outcome="panicked",pool="mail",le="10"} 1
bgpool_task_duration_seconds_bucket{outcome="panicked",pool="mail",le="30"} 1
bgpool_task_duration_seconds_bucket{outcome="panicked",pool="mail",le="60"} 1
bgpool_task_duration_seconds_bucket{outcome="panicked",pool="mail",le="120"} 1
bgpool_task_duration_seconds_bucket{outcome="panicked",pool="mail",le="300"} 1
bgpool_task_duration_seconds_bucket{outcome="panicked",pool="mail",le="+Inf"} 1
bgpool_task_duration_seconds_sum{outcome="panicked",pool="mail"} 0
bgpool_task_duration_seconds_count{outcome="panicked",pool="mail"} 1
`), "bgpool_task_duration_seconds")
		assert.NoError(t, err, "task duration")
	})
}

func TestCollectorOutcomes(t *testing.T) {
	bg := context.Background()
	block := func(release <-chan struct{}) bgpool.Task {
		return func(context.Context) error { <-release; return nil }
	}
	tests := []struct {
		name string
		opts []bgpool.Option
		// run submits the workload at time 0 and lets it finish.
		run func(t *testing.T, p *bgpool.Pool)

		tasks     map[string]float64 // bgpool_tasks_total by outcome; the rest must be 0
		waitCount uint64
		waitSum   float64
		durations map[string][2]float64 // outcome: count, sum
	}{
		{
			name: "counts expired tasks as dropped and observes their wait",
			opts: []bgpool.Option{bgpool.WithQueueSize(2), bgpool.WithMaxQueueWait(5 * time.Second)},
			run: func(t *testing.T, p *bgpool.Pool) {
				release := make(chan struct{})
				require.NoError(t, p.Submit(bg, block(release)))
				require.NoError(t, p.Submit(bg, sleeper(0, nil)))
				require.NoError(t, p.Submit(bg, sleeper(0, nil)))
				time.Sleep(10 * time.Second)
				close(release)
			},
			tasks:     map[string]float64{"completed": 1, "dropped": 2},
			waitCount: 3, waitSum: 20,
			durations: map[string][2]float64{"completed": {1, 10}},
		},
		{
			name: "observes the wait of a task DropOldest discarded from the queue",
			opts: []bgpool.Option{bgpool.WithQueueSize(1), bgpool.WithPolicy(bgpool.DropOldest)},
			run: func(t *testing.T, p *bgpool.Pool) {
				release := make(chan struct{})
				require.NoError(t, p.Submit(bg, block(release)))
				require.NoError(t, p.Submit(bg, sleeper(0, nil)))
				time.Sleep(time.Second)
				require.NoError(t, p.Submit(bg, sleeper(0, nil))) // discards the one before
				time.Sleep(time.Second)
				close(release)
			},
			tasks:     map[string]float64{"completed": 2, "dropped": 1},
			waitCount: 3, waitSum: 0 + 1 + 1,
			durations: map[string][2]float64{"completed": {2, 2}},
		},
		{
			name: "does not observe the wait of a task dropped on arrival",
			opts: []bgpool.Option{bgpool.WithQueueSize(1), bgpool.WithPolicy(bgpool.Drop)},
			run: func(t *testing.T, p *bgpool.Pool) {
				release := make(chan struct{})
				require.NoError(t, p.Submit(bg, block(release)))
				require.NoError(t, p.Submit(bg, sleeper(0, nil)))
				require.NoError(t, p.Submit(bg, sleeper(0, nil))) // dropped
				time.Sleep(time.Second)
				close(release)
			},
			tasks:     map[string]float64{"completed": 2, "dropped": 1},
			waitCount: 2, waitSum: 1,
			durations: map[string][2]float64{"completed": {2, 1}},
		},
		{
			name: "counts a task run by CallerRuns as waiting 0s",
			opts: []bgpool.Option{bgpool.WithQueueSize(0), bgpool.WithPolicy(bgpool.CallerRuns)},
			run: func(t *testing.T, p *bgpool.Pool) {
				release := make(chan struct{})
				require.NoError(t, p.Submit(bg, block(release)))
				require.NoError(t, p.Submit(bg, sleeper(3*time.Second, nil))) // runs here
				close(release)
			},
			tasks:     map[string]float64{"completed": 2},
			waitCount: 2, waitSum: 0,
			durations: map[string][2]float64{"completed": {2, 6}},
		},
		{
			name: "reports tasks that Shutdown abandoned, queued or running",
			opts: []bgpool.Option{bgpool.WithQueueSize(1)},
			run: func(t *testing.T, p *bgpool.Pool) {
				require.NoError(t, p.Submit(bg, func(ctx context.Context) error {
					<-ctx.Done()
					return ctx.Err()
				}))
				require.NoError(t, p.Submit(bg, sleeper(0, nil)))
				time.Sleep(time.Second)
				ctx, cancel := context.WithTimeout(bg, 2*time.Second)
				defer cancel()
				assert.ErrorIs(t, p.Shutdown(ctx), context.DeadlineExceeded)
			},
			tasks:     map[string]float64{"abandoned": 2},
			waitCount: 2, waitSum: 0 + 3,
			durations: map[string][2]float64{"abandoned": {1, 3}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				c := newCollector(t, "mail")
				p, err := bgpool.New(1, append([]bgpool.Option{
					bgpool.WithObserver(c.Observe),
					bgpool.WithErrorHandler(func(context.Context, error) {}),
				}, tt.opts...)...)
				require.NoError(t, err)
				c.Watch(p)

				tt.run(t, p)
				synctest.Wait()
				_ = p.Shutdown(bg) // returns at once if tt.run already shut p down
				synctest.Wait()

				var want strings.Builder
				want.WriteString(tasksHelp)
				for _, out := range []string{"abandoned", "completed", "dropped", "failed", "handed_off", "panicked", "rejected"} {
					want.WriteString(`bgpool_tasks_total{outcome="` + out + `",pool="mail"} ` +
						strconv.FormatFloat(tt.tasks[out], 'g', -1, 64) + "\n")
				}
				assert.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(want.String()), "bgpool_tasks_total"))

				count, sum := histogram(t, c, "bgpool_queue_wait_seconds", "")
				assert.Equal(t, tt.waitCount, count, "queue wait count")
				assert.Equal(t, tt.waitSum, sum, "queue wait sum")
				for _, out := range []string{"completed", "failed", "panicked", "abandoned"} {
					count, sum := histogram(t, c, "bgpool_task_duration_seconds", out)
					want := tt.durations[out]
					assert.Equal(t, uint64(want[0]), count, "task duration count for outcome %q", out)
					assert.Equal(t, want[1], sum, "task duration sum for outcome %q", out)
				}
			})
		})
	}
}

const droppedHelp = `
# HELP bgpool_tasks_dropped_total Tasks dropped, by reason: queue_wait (waited longer than WithMaxQueueWait), queue_delay (dropped from a standing queue by WithQueueDelayTarget), or other (policies, a failing limiter, Job.Do).
# TYPE bgpool_tasks_dropped_total counter
`

// droppedWant is the exposition of bgpool_tasks_dropped_total for a pool
// named mail.
func droppedWant(wait, delay, other uint64) string {
	return droppedHelp + `
bgpool_tasks_dropped_total{pool="mail",reason="queue_wait"} ` + strconv.FormatUint(wait, 10) + `
bgpool_tasks_dropped_total{pool="mail",reason="queue_delay"} ` + strconv.FormatUint(delay, 10) + `
bgpool_tasks_dropped_total{pool="mail",reason="other"} ` + strconv.FormatUint(other, 10) + `
`
}

// value returns the value of the gauge or counter series name that c
// reports, with label set to want when label is not empty, failing the test
// when there is no such series.
func value(t *testing.T, c prometheus.Collector, name, label, want string) float64 {
	t.Helper()
	m := series(t, c, name, label, want)
	if m.GetGauge() != nil {
		return m.GetGauge().GetValue()
	}
	return m.GetCounter().GetValue()
}

// series gathers c's metrics and returns the series of name whose label
// is want (the first series when label is empty), failing the test when
// there is none.
func series(t *testing.T, c prometheus.Collector, name, label, want string) *dto.Metric {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			got := ""
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label {
					got = lp.GetValue()
				}
			}
			if label == "" || got == want {
				return m
			}
		}
	}
	require.Failf(t, "no such series", "%s{%s=%q}", name, label, want)
	return nil
}

func TestDroppedReasonQueueWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCollector(t, "mail")
		p := newPool(t, c, 1, bgpool.WithQueueSize(1), bgpool.WithMaxQueueWait(time.Second))
		bg := context.Background()

		// The only worker is busy for 2s: the queued task waits longer than
		// WithMaxQueueWait and expires when the worker comes for it.
		require.NoError(t, p.Submit(bg, sleeper(2*time.Second, nil)))
		require.NoError(t, p.Submit(bg, sleeper(0, nil)))
		time.Sleep(3 * time.Second)
		synctest.Wait()

		s := p.Stats()
		require.Equal(t, uint64(1), s.Expired)
		assert.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(droppedWant(1, 0, 0)), "bgpool_tasks_dropped_total"))
		assert.Equal(t, 1.0, value(t, c, "bgpool_tasks_total", "outcome", "dropped"), "the expired task is dropped")
	})
}

func TestDroppedReasonQueueDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const behind = 10
		c := newCollector(t, "mail")
		p := newPool(t, c, 1, bgpool.WithQueueSize(1+behind), bgpool.WithQueueDelayTarget(5*time.Millisecond))
		bg := context.Background()

		// All submitted at 0 to one worker: the first runs 50ms; the second
		// starts at 50ms, having waited 50ms, above target for 45ms, less
		// than the 100ms interval, so it runs, for 200ms; at 250ms the queue
		// has stood above target for 245ms, and the worker drops the tasks
		// behind it, every one of which waited 250ms.
		require.NoError(t, p.Submit(bg, sleeper(50*time.Millisecond, nil)))
		require.NoError(t, p.Submit(bg, sleeper(200*time.Millisecond, nil)))
		for range behind {
			require.NoError(t, p.Submit(bg, sleeper(0, nil)))
		}

		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		s := p.Stats()
		require.Equal(t, behind, s.Queued, "the queue stands")
		require.Equal(t, 50*time.Millisecond, s.QueueDelay)
		delay := value(t, c, "bgpool_queue_delay_seconds", "", "")
		assert.Greater(t, delay, 0.0, "bgpool_queue_delay_seconds while the queue stands")
		assert.Equal(t, s.QueueDelay.Seconds(), delay)

		time.Sleep(time.Second)
		synctest.Wait()
		s = p.Stats()
		require.Positive(t, s.Delayed)
		assert.Equal(t, uint64(behind), s.Delayed)
		assert.Equal(t, float64(s.Delayed), value(t, c, "bgpool_tasks_dropped_total", "reason", "queue_delay"))
		assert.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(droppedWant(0, s.Delayed, 0)), "bgpool_tasks_dropped_total"))
		assert.Equal(t, 0, s.Queued)
		assert.Equal(t, 0.0, value(t, c, "bgpool_queue_delay_seconds", "", ""), "the queue is empty")
	})
}

func TestDroppedReasonOther(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCollector(t, "mail")
		p := newPool(t, c, 1, bgpool.WithQueueSize(0), bgpool.WithPolicy(bgpool.Drop))
		bg := context.Background()

		// The only worker is busy and there is no queue: Drop discards the
		// second task.
		require.NoError(t, p.Submit(bg, sleeper(time.Second, nil)))
		synctest.Wait()
		require.NoError(t, p.Submit(bg, sleeper(0, nil)))
		time.Sleep(2 * time.Second)
		synctest.Wait()

		s := p.Stats()
		require.Equal(t, uint64(1), s.Dropped)
		assert.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(droppedWant(0, 0, 1)), "bgpool_tasks_dropped_total"))
	})
}

func TestWorkersFollowsAdaptiveConcurrency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const size = 4
		c := newCollector(t, "mail")
		p := newPool(t, c, size, bgpool.WithQueueSize(1000), bgpool.WithAdaptiveConcurrency(1, 64))
		bg := context.Background()

		// A queue of tasks that run 10ms whatever the cap: the pool is
		// saturated and run times stay flat, so the cap grows.
		for range 1000 {
			require.NoError(t, p.Submit(bg, sleeper(10*time.Millisecond, nil)))
		}
		time.Sleep(500 * time.Millisecond)
		synctest.Wait()
		s := p.Stats()
		require.NotEqual(t, size, s.Workers, "the cap moved")
		assert.Equal(t, float64(s.Workers), value(t, c, "bgpool_workers", "", ""), "while the pool is busy")

		time.Sleep(time.Minute)
		synctest.Wait()
		s = p.Stats()
		require.Zero(t, s.Queued)
		assert.Equal(t, float64(s.Workers), value(t, c, "bgpool_workers", "", ""), "once the pool is quiet")
		assert.NoError(t, testutil.CollectAndCompare(c, strings.NewReader(`
# HELP bgpool_workers The current cap on tasks running at once: the pool's size, moved by Tune or WithAdaptiveConcurrency.
# TYPE bgpool_workers gauge
bgpool_workers{pool="mail"} `+strconv.Itoa(s.Workers)+`
`), "bgpool_workers"), "the help says the cap moves")
	})
}

func TestUnwatchedCollectorReportsOnlyHistograms(t *testing.T) {
	c := newCollector(t, "mail")
	assert.Equal(t, 0, testutil.CollectAndCount(c, statsNames...), "before Watch")
	assert.Equal(t, 1, testutil.CollectAndCount(c, "bgpool_queue_wait_seconds"))
	assert.Equal(t, 4, testutil.CollectAndCount(c, "bgpool_task_duration_seconds"), "one series per outcome of a task that ran")

	newPool(t, c, 2)
	assert.Equal(t, 5+7+3+1, testutil.CollectAndCount(c, statsNames...), "after Watch")

	c.Watch(nil)
	assert.Equal(t, 0, testutil.CollectAndCount(c, statsNames...), "after Watch(nil)")
}

func TestCollectorCountsShedRequests(t *testing.T) {
	c := newCollector(t, "mail")
	p := newPool(t, c, 1, bgpool.WithQueueSize(0))
	started := make(chan struct{})
	release := make(chan struct{})
	require.NoError(t, p.Submit(context.Background(), func(context.Context) error {
		close(started)
		<-release
		return nil
	}))
	defer close(release)
	<-started // the only worker is busy and there is no queue: the pool is saturated

	var handled atomic.Bool
	h := bgpool.Middleware(p, bgpool.WithShedding(time.Second))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handled.Store(true)
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "the request was shed")
	require.False(t, handled.Load(), "the handler did not run")

	err = testutil.CollectAndCompare(c, strings.NewReader(shedHelp+`
bgpool_requests_shed_total{pool="mail"} 1
`), "bgpool_requests_shed_total")
	assert.NoError(t, err)
	assert.Equal(t, uint64(1), p.Stats().Shed)
}

func TestScrapeOverHTTP(t *testing.T) {
	c := newCollector(t, "mail")
	p := newPool(t, c, 2, bgpool.WithQueueSize(10))
	for range 3 {
		require.NoError(t, p.Submit(context.Background(), sleeper(0, nil)))
	}
	require.NoError(t, p.Submit(context.Background(), sleeper(0, errFail)))
	shutdown(t, p)

	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(c))
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()

	resp, err := srv.Client().Get(srv.URL + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, resp.Body.Close())
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, resp.Header.Get("Content-Type"), "text/plain")

	var lines []string
	for line := range strings.Lines(string(body)) {
		line = strings.TrimSuffix(line, "\n")
		if strings.HasPrefix(line, "bgpool_") {
			assert.Contains(t, line, `pool="mail"`)
			lines = append(lines, line)
		}
	}
	for _, want := range []string{
		`bgpool_workers{pool="mail"} 2`,
		`bgpool_running{pool="mail"} 0`,
		`bgpool_queued{pool="mail"} 0`,
		`bgpool_queue_capacity{pool="mail"} 10`,
		`bgpool_tasks_total{outcome="completed",pool="mail"} 3`,
		`bgpool_tasks_total{outcome="failed",pool="mail"} 1`,
		`bgpool_tasks_total{outcome="rejected",pool="mail"} 0`,
		`bgpool_queue_wait_seconds_count{pool="mail"} 4`,
		`bgpool_queue_wait_seconds_bucket{pool="mail",le="300"} 4`,
		`bgpool_task_duration_seconds_count{outcome="completed",pool="mail"} 3`,
		`bgpool_task_duration_seconds_count{outcome="failed",pool="mail"} 1`,
		`bgpool_task_duration_seconds_bucket{outcome="completed",pool="mail",le="+Inf"} 3`,
	} {
		assert.Contains(t, lines, want)
	}
	assert.Contains(t, lines, `bgpool_requests_shed_total{pool="mail"} 0`)
	assert.Len(t, lines, 5+7+3+1+(14+3)+4*(14+3), "every series: gauges, counters, histograms")
}

func TestTwoPoolsShareARegistry(t *testing.T) {
	mail, sms := newCollector(t, "mail"), newCollector(t, "sms")
	newPool(t, mail, 8, bgpool.WithQueueSize(100))
	newPool(t, sms, 2)

	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(mail))
	require.NoError(t, reg.Register(sms))

	err := testutil.GatherAndCompare(reg, strings.NewReader(gaugesHelp+`
bgpool_workers{pool="mail"} 8
bgpool_workers{pool="sms"} 2
bgpool_running{pool="mail"} 0
bgpool_running{pool="sms"} 0
bgpool_queued{pool="mail"} 0
bgpool_queued{pool="sms"} 0
bgpool_queue_capacity{pool="mail"} 100
bgpool_queue_capacity{pool="sms"} 2
`), gaugeNames...)
	assert.NoError(t, err)
	n, err := testutil.GatherAndCount(reg, "bgpool_tasks_total")
	require.NoError(t, err)
	assert.Equal(t, 2*7, n)

	var already prometheus.AlreadyRegisteredError
	err = reg.Register(newCollector(t, "mail"))
	assert.ErrorAs(t, err, &already, "a second collector for the pool named mail")
}

func TestCollectorPassesLint(t *testing.T) {
	c := newCollector(t, "mail")
	p := newPool(t, c, 2)
	require.NoError(t, p.Submit(context.Background(), sleeper(0, nil)))
	shutdown(t, p)

	problems, err := testutil.CollectAndLint(c)
	require.NoError(t, err)
	assert.Empty(t, problems)
}

func TestConcurrentObserveAndCollect(t *testing.T) {
	const submitters, perSubmitter = 8, 200
	c := newCollector(t, "mail")
	p := newPool(t, c, 4, bgpool.WithQueueSize(16), bgpool.WithPolicy(bgpool.Reject))
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))

	done := make(chan struct{})
	scraped := make(chan error, 1)
	go func() {
		var err error
		for {
			select {
			case <-done: // the workload is over
				scraped <- err
				return
			default: // scrape again while tasks run
			}
			if _, gerr := reg.Gather(); gerr != nil && err == nil {
				err = gerr
			}
		}
	}()
	var wg sync.WaitGroup
	for i := range submitters {
		wg.Go(func() {
			for j := range perSubmitter {
				var err error
				if (i+j)%5 == 0 {
					err = errFail
				}
				_ = p.Submit(context.Background(), sleeper(0, err))
			}
		})
	}
	wg.Wait()
	shutdown(t, p)
	close(done)
	require.NoError(t, <-scraped)

	s := p.Stats()
	require.Equal(t, uint64(submitters*perSubmitter), s.Submitted)
	count, _ := histogram(t, c, "bgpool_queue_wait_seconds", "")
	assert.Equal(t, s.Completed+s.Failed, count, "one queue wait per task that ran")
	completed, _ := histogram(t, c, "bgpool_task_duration_seconds", "completed")
	failed, _ := histogram(t, c, "bgpool_task_duration_seconds", "failed")
	assert.Equal(t, s.Completed, completed)
	assert.Equal(t, s.Failed, failed)
	assert.Equal(t, s.Submitted, s.Completed+s.Failed+s.Rejected)
}

func BenchmarkObserve(b *testing.B) {
	c, err := bgprom.New("mail")
	require.NoError(b, err)
	ev := bgpool.TaskEvent{Outcome: bgpool.OutcomeCompleted, QueueWait: 3 * time.Millisecond, RunTime: 40 * time.Millisecond}
	b.Run("goroutines=1", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c.Observe(ev)
		}
	})
	b.Run("goroutines=GOMAXPROCS", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				c.Observe(ev)
			}
		})
	})
}
