package bgotel_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/bgpool/bgpool"
	bgotel "github.com/bgpool/bgpool/contrib/otel"
)

// A pool named "mail" with both metrics and tracing. In a service the
// providers come from the SDK set up with an exporter (OTLP, say); here a
// manual reader and a span recorder stand in, and the outcome counts and
// spans are printed.
func Example() {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))

	m, err := bgotel.NewMetrics("mail", bgotel.WithMeterProvider(mp))
	if err != nil {
		log.Fatal(err)
	}
	t, err := bgotel.NewTracing("mail", bgotel.WithTracerProvider(tp))
	if err != nil {
		log.Fatal(err)
	}
	p, err := bgpool.New(1,
		bgpool.WithObserver(m.Observe), // feeds the histograms
		bgpool.WithTaskWrapper(t.Wrap), // a span per task
		bgpool.WithErrorHandler(func(context.Context, error) {}),
	)
	if err != nil {
		log.Fatal(err)
	}
	m.Watch(p) // the state and the counters come from p.Stats()

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

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		log.Fatal(err)
	}
	tasks := map[string]int64{} // the data points come in no set order
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			if mt.Name != "bgpool.tasks" {
				continue
			}
			for _, dp := range mt.Data.(metricdata.Sum[int64]).DataPoints {
				out, _ := dp.Attributes.Value(bgotel.OutcomeKey)
				tasks[out.AsString()] = dp.Value
			}
		}
	}
	for _, out := range []string{"completed", "failed", "panicked", "dropped", "rejected", "abandoned", "handed_off"} {
		fmt.Printf("bgpool.tasks{bgpool.task.outcome=%s} %d\n", out, tasks[out])
	}
	for _, s := range spans.Ended() {
		fmt.Printf("span %q root=%t status=%s\n", s.Name(), !s.Parent().IsValid(), s.Status().Code)
	}
	// Output:
	// bgpool.tasks{bgpool.task.outcome=completed} 2
	// bgpool.tasks{bgpool.task.outcome=failed} 1
	// bgpool.tasks{bgpool.task.outcome=panicked} 0
	// bgpool.tasks{bgpool.task.outcome=dropped} 0
	// bgpool.tasks{bgpool.task.outcome=rejected} 0
	// bgpool.tasks{bgpool.task.outcome=abandoned} 0
	// bgpool.tasks{bgpool.task.outcome=handed_off} 0
	// span "mail task" root=true status=Unset
	// span "mail task" root=true status=Unset
	// span "mail task" root=true status=Error
}

// A task submitted during a request runs in a span of its own, linked to the
// request's span; with WithAwaitedAsChild, a task the request waits for is
// a child of it instead.
func ExampleWithAwaitedAsChild() {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t, err := bgotel.NewTracing("mail", bgotel.WithTracerProvider(tp), bgotel.WithAwaitedAsChild())
	if err != nil {
		log.Fatal(err)
	}
	p, err := bgpool.New(1, bgpool.WithTaskWrapper(t.Wrap))
	if err != nil {
		log.Fatal(err)
	}

	ctx, req := tp.Tracer("http").Start(context.Background(), "POST /signup")
	_ = p.Do(ctx, func(context.Context) error { return nil })     // the handler waits for it
	_ = p.Submit(ctx, func(context.Context) error { return nil }) // it runs after the response
	req.End()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Shutdown(shutdownCtx); err != nil {
		log.Fatal(err)
	}

	for _, s := range spans.Ended() {
		if s.Name() == "POST /signup" {
			continue
		}
		child := s.Parent().SpanID() == req.SpanContext().SpanID()
		linked := len(s.Links()) == 1 && s.Links()[0].SpanContext.SpanID() == req.SpanContext().SpanID()
		awaited := false
		for _, kv := range s.Attributes() {
			if kv.Key == bgotel.AwaitedKey {
				awaited = kv.Value.AsBool()
			}
		}
		fmt.Printf("awaited=%t child=%t linked=%t\n", awaited, child, linked)
	}
	// Output:
	// awaited=true child=true linked=false
	// awaited=false child=false linked=true
}
