package bgotel

import (
	"fmt"
	"math"
	"slices"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// defaultBuckets are the upper bounds, in seconds, of DefaultBuckets: the
// same as contrib/prometheus', so that both backends bucket a pool alike.
var defaultBuckets = []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// DefaultBuckets returns the histograms' default explicit bucket
// boundaries, in seconds: 1ms, 5ms, 10ms, 50ms, 100ms, 500ms, 1s, 2.5s, 5s,
// 10s, 30s, 1m, 2m and 5m. Background tasks run and queue from milliseconds
// to minutes, well past the 10s at which the SDK's default boundaries
// stop. The slice is a fresh copy each call, to extend or trim for
// WithQueueWaitBuckets or WithDurationBuckets.
func DefaultBuckets() []float64 {
	return slices.Clone(defaultBuckets)
}

// A MetricsOption configures a Metrics in NewMetrics. Options are applied
// in order; a later option overrides an earlier one of the same kind. An
// invalid option makes NewMetrics return an error.
type MetricsOption interface {
	applyMetrics(*metricsOptions) error
}

// A TracingOption configures a Tracing in NewTracing. Options are applied
// in order; a later option overrides an earlier one of the same kind.
type TracingOption interface {
	applyTracing(*tracingOptions) error
}

type metricsOptionFunc func(*metricsOptions) error

func (f metricsOptionFunc) applyMetrics(o *metricsOptions) error { return f(o) }

type tracingOptionFunc func(*tracingOptions) error

func (f tracingOptionFunc) applyTracing(o *tracingOptions) error { return f(o) }

// metricsOptions holds a Metrics' configuration. The zero value of every
// field means the default; setDefaults fills them in.
type metricsOptions struct {
	meterProvider    metric.MeterProvider
	queueWaitBuckets []float64
	durationBuckets  []float64
}

// setDefaults fills in every default of a Metrics in one place.
func (o *metricsOptions) setDefaults() {
	if o.meterProvider == nil {
		o.meterProvider = otel.GetMeterProvider()
	}
	if len(o.queueWaitBuckets) == 0 {
		o.queueWaitBuckets = DefaultBuckets()
	}
	if len(o.durationBuckets) == 0 {
		o.durationBuckets = DefaultBuckets()
	}
}

// tracingOptions holds a Tracing's configuration. The zero value of every
// field means the default; setDefaults fills them in.
type tracingOptions struct {
	tracerProvider trace.TracerProvider
	awaitedAsChild bool
}

// setDefaults fills in every default of a Tracing in one place.
func (o *tracingOptions) setDefaults() {
	if o.tracerProvider == nil {
		o.tracerProvider = otel.GetTracerProvider()
	}
}

// WithMeterProvider sets the MeterProvider that NewMetrics creates its
// instruments with. The default, and what nil means, is the global one,
// otel.GetMeterProvider(), read once by NewMetrics. The global provider
// delegates to one set later with otel.SetMeterProvider, so either order
// works.
func WithMeterProvider(mp metric.MeterProvider) MetricsOption {
	return metricsOptionFunc(func(o *metricsOptions) error {
		o.meterProvider = mp
		return nil
	})
}

// WithQueueWaitBuckets sets the explicit bucket boundaries, in seconds, of
// bgpool.task.time_in_queue. The default, and what no bounds mean, is
// DefaultBuckets. Bounds that are not strictly increasing, or that include
// NaN or -Inf, are an error; a final +Inf bound is allowed and dropped,
// since the last bucket is unbounded anyway. The slice is copied.
func WithQueueWaitBuckets(bounds ...float64) MetricsOption {
	return metricsOptionFunc(func(o *metricsOptions) error {
		b, err := checkBuckets("WithQueueWaitBuckets", bounds)
		o.queueWaitBuckets = b
		return err
	})
}

// WithDurationBuckets sets the explicit bucket boundaries, in seconds, of
// bgpool.task.duration, as WithQueueWaitBuckets does for the time in queue.
// The default is DefaultBuckets.
func WithDurationBuckets(bounds ...float64) MetricsOption {
	return metricsOptionFunc(func(o *metricsOptions) error {
		b, err := checkBuckets("WithDurationBuckets", bounds)
		o.durationBuckets = b
		return err
	})
}

// checkBuckets returns a copy of bounds without a final +Inf, or an error
// naming the option when they are not strictly increasing, which the SDK
// would answer by dropping the histogram with only a log line.
func checkBuckets(option string, bounds []float64) ([]float64, error) {
	for i, b := range bounds {
		if math.IsNaN(b) || math.IsInf(b, -1) || (math.IsInf(b, 1) && i != len(bounds)-1) {
			return nil, fmt.Errorf("bgotel: %s(%v): bound %d is %v", option, bounds, i, b)
		}
		if i > 0 && b <= bounds[i-1] {
			return nil, fmt.Errorf("bgotel: %s(%v): bounds must be strictly increasing, but bound %d (%v) follows %v",
				option, bounds, i, b, bounds[i-1])
		}
	}
	if n := len(bounds); n > 0 && math.IsInf(bounds[n-1], 1) {
		bounds = bounds[:n-1]
	}
	return slices.Clone(bounds), nil
}

// WithTracerProvider sets the TracerProvider that NewTracing takes its
// Tracer from. The default, and what nil means, is the global one,
// otel.GetTracerProvider(), read once by NewTracing. The global provider
// delegates to one set later with otel.SetTracerProvider, so either order
// works.
func WithTracerProvider(tp trace.TracerProvider) TracingOption {
	return tracingOptionFunc(func(o *tracingOptions) error {
		o.tracerProvider = tp
		return nil
	})
}

// WithAwaitedAsChild makes the span of a task that someone waits for
// (TaskInfo.Awaited: Pool.Do, Job.Do, a Group, Submit[T]) a child of the
// submitter's span, rather than a new root linked to it. The submitter's
// span is then still open while the task runs, so the task belongs in its
// trace. Tasks that nobody waits for stay new roots. The default is off:
// every task's span is a new root.
func WithAwaitedAsChild() TracingOption {
	return tracingOptionFunc(func(o *tracingOptions) error {
		o.awaitedAsChild = true
		return nil
	})
}
