package bgotel_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"

	"github.com/bgpool/bgpool"
	bgotel "github.com/bgpool/bgpool/contrib/otel"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent())
}

var errFail = errors.New("smtp: 451 try again later")

// newReader returns a manual reader and a MeterProvider that it reads,
// shut down when the test ends.
func newReader(t *testing.T) (*sdkmetric.ManualReader, *sdkmetric.MeterProvider) {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { assert.NoError(t, mp.Shutdown(context.Background())) })
	return reader, mp
}

// newRecorder returns a span recorder and a TracerProvider that records
// into it synchronously, shut down when the test ends.
func newRecorder(t *testing.T) (*tracetest.SpanRecorder, *sdktrace.TracerProvider) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { assert.NoError(t, tp.Shutdown(context.Background())) })
	return rec, tp
}

// newMetrics returns a Metrics for a pool named name, failing the test on
// an error.
func newMetrics(t *testing.T, name string, opts ...bgotel.MetricsOption) *bgotel.Metrics {
	t.Helper()
	m, err := bgotel.NewMetrics(name, opts...)
	require.NoError(t, err)
	return m
}

// newTracing returns a Tracing for a pool named name, failing the test on
// an error.
func newTracing(t *testing.T, name string, opts ...bgotel.TracingOption) *bgotel.Tracing {
	t.Helper()
	tr, err := bgotel.NewTracing(name, opts...)
	require.NoError(t, err)
	return tr
}

// newPool returns a pool with a quiet error handler and opts, shut down
// when the test ends.
func newPool(t *testing.T, size int, opts ...bgpool.Option) *bgpool.Pool {
	t.Helper()
	opts = append([]bgpool.Option{bgpool.WithErrorHandler(func(context.Context, error) {})}, opts...)
	p, err := bgpool.New(size, opts...)
	require.NoError(t, err)
	t.Cleanup(func() { shutdown(t, p) })
	return p
}

// shutdown drains p within 10 seconds. It returns at once when p is shut
// down already.
func shutdown(t *testing.T, p *bgpool.Pool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	assert.NoError(t, p.Shutdown(ctx))
}

// waitStats waits until cond holds for p.Stats(), failing the test after
// 10 seconds.
func waitStats(t *testing.T, p *bgpool.Pool, cond func(bgpool.Stats) bool) {
	t.Helper()
	require.Eventually(t, func() bool { return cond(p.Stats()) }, 10*time.Second, time.Millisecond,
		"the pool never reached the state the test waits for: %+v", p.Stats())
}

// gate is a task that blocks until open is called, and tells when it
// started.
type gate struct {
	started chan struct{}
	release chan struct{}
}

func newGate() *gate {
	return &gate{started: make(chan struct{}), release: make(chan struct{})}
}

func (g *gate) task(context.Context) error {
	close(g.started)
	<-g.release
	return nil
}

func (g *gate) open() { close(g.release) }

// collected is one collection's figures, by instrument name.
type collected map[string]metricdata.Metrics

// collect reads every metric from reader.
func collect(t *testing.T, reader *sdkmetric.ManualReader) collected {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	c := collected{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != bgotel.ScopeName {
			continue
		}
		for _, m := range sm.Metrics {
			c[m.Name] = m
		}
	}
	return c
}

// point is an int64 data point's value with its attributes.
type point struct {
	attrs attribute.Set
	value int64
}

// ints returns the int64 points of the instrument name, and whether it is
// monotonic (a Counter) or not (an UpDownCounter).
func (c collected) ints(t *testing.T, name string) (points []point, monotonic bool) {
	t.Helper()
	m, ok := c[name]
	require.True(t, ok, "no instrument %s in the collection", name)
	sum, ok := m.Data.(metricdata.Sum[int64])
	require.True(t, ok, "%s is a %T, not an int64 sum", name, m.Data)
	for _, dp := range sum.DataPoints {
		points = append(points, point{dp.Attributes, dp.Value})
	}
	return points, sum.IsMonotonic
}

// value returns the one int64 point of the instrument name, which must
// carry only the pool name.
func (c collected) value(t *testing.T, name, pool string) int64 {
	t.Helper()
	points, _ := c.ints(t, name)
	require.Len(t, points, 1, "%s", name)
	assert.Equal(t, attribute.NewSet(bgotel.PoolNameKey.String(pool)), points[0].attrs, "%s's attributes", name)
	return points[0].value
}

// byOutcome returns the int64 points of the instrument name by their
// outcome attribute, checking that each carries the pool name.
func (c collected) byOutcome(t *testing.T, name, pool string) map[string]int64 {
	t.Helper()
	points, _ := c.ints(t, name)
	out := map[string]int64{}
	for _, p := range points {
		name, ok := p.attrs.Value(bgotel.PoolNameKey)
		assert.True(t, ok && name.AsString() == pool, "pool name on %v", p.attrs)
		o, ok := p.attrs.Value(bgotel.OutcomeKey)
		require.True(t, ok, "no outcome on %v", p.attrs)
		out[o.AsString()] = p.value
	}
	return out
}

// histogram returns the points of the float64 histogram name, by outcome
// ("" for the point without one).
func (c collected) histogram(t *testing.T, name string) map[string]metricdata.HistogramDataPoint[float64] {
	t.Helper()
	m, ok := c[name]
	require.True(t, ok, "no instrument %s in the collection", name)
	h, ok := m.Data.(metricdata.Histogram[float64])
	require.True(t, ok, "%s is a %T, not a float64 histogram", name, m.Data)
	out := map[string]metricdata.HistogramDataPoint[float64]{}
	for _, dp := range h.DataPoints {
		o, _ := dp.Attributes.Value(bgotel.OutcomeKey)
		out[o.AsString()] = dp
	}
	return out
}

// observeOne records one completed task that waited 3ms and ran 40ms.
func observeOne(m *bgotel.Metrics) {
	m.Observe(bgpool.TaskEvent{Outcome: bgpool.OutcomeCompleted, Queued: true, Started: true,
		QueueWait: 3 * time.Millisecond, RunTime: 40 * time.Millisecond})
}
