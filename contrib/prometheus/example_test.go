package bgprom_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/bgpool/bgpool"
	bgprom "github.com/bgpool/bgpool/contrib/prometheus"
)

// A pool named "mail" with its metrics on a registry of its own, served by
// promhttp. In a service the handler goes on the mux at /metrics; here one
// scrape is made with httptest and the gauge and counter lines are printed.
func Example() {
	c, err := bgprom.New("mail")
	if err != nil {
		log.Fatal(err)
	}
	p, err := bgpool.New(4,
		bgpool.WithQueueSize(100),
		bgpool.WithObserver(c.Observe), // feeds the histograms
		bgpool.WithErrorHandler(func(context.Context, error) {}),
	)
	if err != nil {
		log.Fatal(err)
	}
	c.Watch(p) // the gauges and the counters come from p.Stats()

	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{}) // mux.Handle("/metrics", metrics)

	for i := range 3 {
		_ = p.Submit(context.Background(), func(context.Context) error {
			if i == 2 {
				return errors.New("smtp: 451 try again later")
			}
			return nil
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}

	rec := httptest.NewRecorder()
	metrics.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for line := range strings.Lines(rec.Body.String()) {
		if strings.HasPrefix(line, "bgpool_") && !strings.Contains(line, "_seconds") {
			fmt.Print(line)
		}
	}
	// Output:
	// bgpool_queue_capacity{pool="mail"} 100
	// bgpool_queued{pool="mail"} 0
	// bgpool_requests_shed_total{pool="mail"} 0
	// bgpool_running{pool="mail"} 0
	// bgpool_tasks_dropped_total{pool="mail",reason="other"} 0
	// bgpool_tasks_dropped_total{pool="mail",reason="queue_delay"} 0
	// bgpool_tasks_dropped_total{pool="mail",reason="queue_wait"} 0
	// bgpool_tasks_total{outcome="abandoned",pool="mail"} 0
	// bgpool_tasks_total{outcome="completed",pool="mail"} 2
	// bgpool_tasks_total{outcome="dropped",pool="mail"} 0
	// bgpool_tasks_total{outcome="failed",pool="mail"} 1
	// bgpool_tasks_total{outcome="handed_off",pool="mail"} 0
	// bgpool_tasks_total{outcome="panicked",pool="mail"} 0
	// bgpool_tasks_total{outcome="rejected",pool="mail"} 0
	// bgpool_workers{pool="mail"} 4
}

// Buckets of your own for a pool whose tasks take seconds to an hour.
func ExampleWithDurationBuckets() {
	c, err := bgprom.New("reports",
		bgprom.WithDurationBuckets(1, 10, 60, 300, 900, 1800, 3600),
		bgprom.WithQueueWaitBuckets(append(bgprom.DefaultBuckets(), 600, 1800)...),
	)
	if err != nil {
		log.Fatal(err)
	}
	c.Observe(bgpool.TaskEvent{Outcome: bgpool.OutcomeCompleted, QueueWait: 20 * time.Minute, RunTime: 7 * time.Minute})

	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	families, err := reg.Gather()
	if err != nil {
		log.Fatal(err)
	}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			if m.GetHistogram().GetSampleCount() == 0 {
				continue
			}
			fmt.Print(mf.GetName(), ": first bucket holding it ≤ ")
			for _, b := range m.GetHistogram().GetBucket() {
				if b.GetCumulativeCount() > 0 {
					fmt.Println(b.GetUpperBound(), "s")
					break
				}
			}
		}
	}
	// Output:
	// bgpool_queue_wait_seconds: first bucket holding it ≤ 1800 s
	// bgpool_task_duration_seconds: first bucket holding it ≤ 900 s
}
