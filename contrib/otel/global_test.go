package bgotel_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/bgpool/bgpool"
	bgotel "github.com/bgpool/bgpool/contrib/otel"
)

// The global providers can be set once per process (the global delegates
// to the first one set), so they live as long as the test binary.
var (
	globalOnce   sync.Once
	globalReader *sdkmetric.ManualReader
	globalSpans  *tracetest.SpanRecorder
	globalRuns   atomic.Int64
)

func setGlobalProviders() {
	globalOnce.Do(func() {
		globalReader = sdkmetric.NewManualReader()
		otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(globalReader)))
		globalSpans = tracetest.NewSpanRecorder()
		otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(globalSpans)))
	})
}

func TestDefaultsAreTheGlobalProvidersEvenWhenSetLater(t *testing.T) {
	// A pool name of its own for each run under -count.
	pool := fmt.Sprintf("global-%d", globalRuns.Add(1))
	m := newMetrics(t, pool) // before the first run sets the globals
	tr := newTracing(t, pool)
	setGlobalProviders()

	p := newPool(t, 1, bgpool.WithObserver(m.Observe), bgpool.WithTaskWrapper(tr.Wrap))
	m.Watch(p)
	require.NoError(t, p.Do(context.Background(), func(context.Context) error { return nil }))
	shutdown(t, p)

	c := collect(t, globalReader)
	assert.Equal(t, int64(1), c.byOutcome(t, "bgpool.tasks", pool)["completed"], "the callback reached the global provider")
	require.NoError(t, m.Unregister())
	var spans int
	for _, s := range globalSpans.Ended() {
		if attrs(s)[bgotel.PoolNameKey].AsString() == pool {
			spans++
		}
	}
	assert.Equal(t, 1, spans, "the span reached the global provider")
}
