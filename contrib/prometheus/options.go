package bgprom

import (
	"fmt"
	"math"
	"slices"
)

// defaultBuckets are the upper bounds, in seconds, of DefaultBuckets.
var defaultBuckets = []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// DefaultBuckets returns the histograms' default bucket upper bounds, in
// seconds: 1ms, 5ms, 10ms, 50ms, 100ms, 500ms, 1s, 2.5s, 5s, 10s, 30s, 1m,
// 2m and 5m. Background tasks (mail, webhooks, thumbnails, reports) run from
// milliseconds to minutes and may queue for as long, well past the 10s at
// which prometheus.DefBuckets stops. The slice is a fresh copy each call, to
// extend or trim for WithQueueWaitBuckets or WithDurationBuckets.
func DefaultBuckets() []float64 {
	return slices.Clone(defaultBuckets)
}

// An Option configures a Collector in New. Options are applied in order; a
// later option overrides an earlier one of the same kind. An invalid option
// makes New return an error.
type Option interface {
	apply(*options) error
}

type optionFunc func(*options) error

func (f optionFunc) apply(o *options) error { return f(o) }

// options holds a Collector's configuration. The zero value of every field
// means the default; defaults are filled in by New via setDefaults.
type options struct {
	queueWaitBuckets []float64
	durationBuckets  []float64
}

// setDefaults fills in every default in one place.
func (o *options) setDefaults() {
	if len(o.queueWaitBuckets) == 0 {
		o.queueWaitBuckets = DefaultBuckets()
	}
	if len(o.durationBuckets) == 0 {
		o.durationBuckets = DefaultBuckets()
	}
}

// WithQueueWaitBuckets sets the upper bounds, in seconds, of
// bgpool_queue_wait_seconds' buckets. The default, and what no bounds mean,
// is DefaultBuckets. Bounds that are not strictly increasing, or that include
// NaN, are an error; a final +Inf bound is allowed and implied anyway. The
// slice is copied.
func WithQueueWaitBuckets(bounds ...float64) Option {
	return optionFunc(func(o *options) error {
		b, err := checkBuckets("WithQueueWaitBuckets", bounds)
		o.queueWaitBuckets = b
		return err
	})
}

// WithDurationBuckets sets the upper bounds, in seconds, of
// bgpool_task_duration_seconds' buckets, as WithQueueWaitBuckets does for
// the queue wait. The default is DefaultBuckets.
func WithDurationBuckets(bounds ...float64) Option {
	return optionFunc(func(o *options) error {
		b, err := checkBuckets("WithDurationBuckets", bounds)
		o.durationBuckets = b
		return err
	})
}

// checkBuckets returns a copy of bounds, or an error naming the option when
// they are not strictly increasing, which prometheus.NewHistogram would
// answer with a panic.
func checkBuckets(option string, bounds []float64) ([]float64, error) {
	for i, b := range bounds {
		if math.IsNaN(b) {
			return nil, fmt.Errorf("bgprom: %s(%v): bound %d is NaN", option, bounds, i)
		}
		if i > 0 && b <= bounds[i-1] {
			return nil, fmt.Errorf("bgprom: %s(%v): bounds must be strictly increasing, but bound %d (%v) follows %v",
				option, bounds, i, b, bounds[i-1])
		}
	}
	return slices.Clone(bounds), nil
}
