package bgprom_test

import (
	"math"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	bgprom "github.com/bgpool/bgpool/contrib/prometheus"
)

func TestNewRejectsBadConfiguration(t *testing.T) {
	tests := []struct {
		name string
		pool string
		opts []bgprom.Option
		want string
	}{
		{"an empty pool name", "", nil, `bgprom: New(""): pool name must not be empty`},
		{"a pool name that is not UTF-8", "m\xffail", nil, "pool name must be valid UTF-8"},
		{"a nil option", "mail", []bgprom.Option{nil}, "bgprom: New: option 0 is nil"},
		{"queue wait buckets out of order", "mail",
			[]bgprom.Option{bgprom.WithQueueWaitBuckets(1, 5, 2)},
			"bgprom: WithQueueWaitBuckets([1 5 2]): bounds must be strictly increasing, but bound 2 (2) follows 5"},
		{"duration buckets with a repeated bound", "mail",
			[]bgprom.Option{bgprom.WithDurationBuckets(1, 1)},
			"bgprom: WithDurationBuckets([1 1]): bounds must be strictly increasing"},
		{"a NaN bound", "mail",
			[]bgprom.Option{bgprom.WithDurationBuckets(1, math.NaN())},
			"bound 1 is NaN"},
	}
	for _, tt := range tests {
		t.Run("rejects "+tt.name, func(t *testing.T) {
			c, err := bgprom.New(tt.pool, tt.opts...)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			assert.Nil(t, c)
		})
	}
}

func TestBucketOptions(t *testing.T) {
	t.Run("no bounds means the default", func(t *testing.T) {
		c := newCollector(t, "mail", bgprom.WithQueueWaitBuckets(), bgprom.WithDurationBuckets(nil...))
		assert.Equal(t, bgprom.DefaultBuckets(), upperBounds(t, c, "bgpool_queue_wait_seconds"))
		assert.Equal(t, bgprom.DefaultBuckets(), upperBounds(t, c, "bgpool_task_duration_seconds"))
	})
	t.Run("a final +Inf bound is allowed", func(t *testing.T) {
		c := newCollector(t, "mail", bgprom.WithDurationBuckets(1, 2, math.Inf(1)))
		assert.Equal(t, []float64{1, 2}, upperBounds(t, c, "bgpool_task_duration_seconds"))
	})
	t.Run("the bounds are copied", func(t *testing.T) {
		bounds := []float64{1, 2, 3}
		c := newCollector(t, "mail", bgprom.WithQueueWaitBuckets(bounds...))
		bounds[0] = 10
		assert.Equal(t, []float64{1, 2, 3}, upperBounds(t, c, "bgpool_queue_wait_seconds"))
	})
	t.Run("DefaultBuckets returns a fresh copy", func(t *testing.T) {
		b := bgprom.DefaultBuckets()
		b[0] = 42
		assert.InDelta(t, 0.001, bgprom.DefaultBuckets()[0], 0)
	})
}

// upperBounds returns the bucket upper bounds, +Inf aside, of the first
// series of the histogram name.
func upperBounds(t *testing.T, c *bgprom.Collector, name string) []float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range families {
		if mf.GetName() == name {
			var bounds []float64
			for _, b := range mf.GetMetric()[0].GetHistogram().GetBucket() {
				bounds = append(bounds, b.GetUpperBound())
			}
			return bounds
		}
	}
	require.Failf(t, "no such histogram", "%s", name)
	return nil
}
