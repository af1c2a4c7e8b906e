package bgotel_test

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	bgotel "github.com/bgpool/bgpool/contrib/otel"
)

func TestNewMetricsRejectsBadConfiguration(t *testing.T) {
	tests := []struct {
		name string
		pool string
		opts []bgotel.MetricsOption
		want string
	}{
		{"an empty pool name", "", nil, `bgotel: NewMetrics(""): pool name must not be empty`},
		{"a pool name that is not UTF-8", "m\xffail", nil, "pool name must be valid UTF-8"},
		{"a nil option", "mail", []bgotel.MetricsOption{nil}, "bgotel: NewMetrics: option 0 is nil"},
		{"queue wait buckets out of order", "mail",
			[]bgotel.MetricsOption{bgotel.WithQueueWaitBuckets(1, 5, 2)},
			"bgotel: WithQueueWaitBuckets([1 5 2]): bounds must be strictly increasing, but bound 2 (2) follows 5"},
		{"duration buckets with a repeated bound", "mail",
			[]bgotel.MetricsOption{bgotel.WithDurationBuckets(1, 1)},
			"bgotel: WithDurationBuckets([1 1]): bounds must be strictly increasing"},
		{"a NaN bound", "mail",
			[]bgotel.MetricsOption{bgotel.WithDurationBuckets(1, math.NaN())},
			"bound 1 is NaN"},
		{"a +Inf bound before the last", "mail",
			[]bgotel.MetricsOption{bgotel.WithDurationBuckets(1, math.Inf(1), 2)},
			"bound 1 is +Inf"},
		{"a -Inf bound", "mail",
			[]bgotel.MetricsOption{bgotel.WithQueueWaitBuckets(math.Inf(-1), 1)},
			"bound 0 is -Inf"},
	}
	for _, tt := range tests {
		t.Run("rejects "+tt.name, func(t *testing.T) {
			m, err := bgotel.NewMetrics(tt.pool, tt.opts...)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			assert.Nil(t, m)
		})
	}
}

func TestNewTracingRejectsBadConfiguration(t *testing.T) {
	tests := []struct {
		name string
		pool string
		opts []bgotel.TracingOption
		want string
	}{
		{"an empty pool name", "", nil, `bgotel: NewTracing(""): pool name must not be empty`},
		{"a pool name that is not UTF-8", "m\xffail", nil, "pool name must be valid UTF-8"},
		{"a nil option", "mail", []bgotel.TracingOption{bgotel.WithAwaitedAsChild(), nil}, "bgotel: NewTracing: option 1 is nil"},
	}
	for _, tt := range tests {
		t.Run("rejects "+tt.name, func(t *testing.T) {
			tr, err := bgotel.NewTracing(tt.pool, tt.opts...)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			assert.Nil(t, tr)
		})
	}
}

func TestBucketOptions(t *testing.T) {
	t.Run("no bounds means the default", func(t *testing.T) {
		reader, mp := newReader(t)
		m := newMetrics(t, "mail", bgotel.WithMeterProvider(mp), bgotel.WithQueueWaitBuckets(), bgotel.WithDurationBuckets(nil...))
		observeOne(m)
		c := collect(t, reader)
		assert.Equal(t, bgotel.DefaultBuckets(), c.histogram(t, "bgpool.task.time_in_queue")[""].Bounds)
		assert.Equal(t, bgotel.DefaultBuckets(), c.histogram(t, "bgpool.task.duration")["completed"].Bounds)
	})
	t.Run("a final +Inf bound is allowed and dropped", func(t *testing.T) {
		reader, mp := newReader(t)
		m := newMetrics(t, "mail", bgotel.WithMeterProvider(mp), bgotel.WithDurationBuckets(1, 2, math.Inf(1)))
		observeOne(m)
		assert.Equal(t, []float64{1, 2}, collect(t, reader).histogram(t, "bgpool.task.duration")["completed"].Bounds)
	})
	t.Run("the bounds are copied", func(t *testing.T) {
		reader, mp := newReader(t)
		bounds := []float64{1, 2, 3}
		m := newMetrics(t, "mail", bgotel.WithMeterProvider(mp), bgotel.WithQueueWaitBuckets(bounds...))
		bounds[0] = 10
		observeOne(m)
		assert.Equal(t, []float64{1, 2, 3}, collect(t, reader).histogram(t, "bgpool.task.time_in_queue")[""].Bounds)
	})
	t.Run("DefaultBuckets returns a fresh copy", func(t *testing.T) {
		b := bgotel.DefaultBuckets()
		b[0] = 42
		assert.InDelta(t, 0.001, bgotel.DefaultBuckets()[0], 0)
	})
}
